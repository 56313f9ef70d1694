from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from configbus.codec import canonical, decode_body, sha256_hex
from configbus.document import Document
from configbus.settings import BusSettings
from configbus.store import Store
from configbus.watcher import SyncOutcome, Watcher
from tests.core.helpers import body, forge_head, make_store
from tests.support import RedisServer, eventually, free_port

RECONCILE_S = 0.5


def settings(namespace: str, url: str, **kw: Any) -> BusSettings:
    kw.setdefault("reconcile_interval_s", RECONCILE_S)
    kw.setdefault("heartbeat_interval_s", 0.5)
    return BusSettings(namespace=namespace, redis_url=url, **kw)


async def until(cond: Callable[[], Any], within: float, what: str) -> None:
    """Bounded poll of a condition on in-process state."""
    try:
        async with asyncio.timeout(within):
            while not cond():  # noqa: ASYNC110 - polling state that has no event of its own
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"not within {within}s: {what}") from None


async def _reported_state(pub: Store, rid: str) -> bool:
    return any(
        i.status.replica_id == rid and i.status.state == "rejected" for i in await pub.replicas()
    )


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def start_watcher(
    stack: AsyncExitStack, url: str, namespace: str, replica_id: str = "r1", **kw: Any
) -> Watcher[Document, Document]:
    store = make_store(url, namespace)
    stack.push_async_callback(store.redis.aclose)
    w: Watcher[Document, Document] = Watcher(
        store, decode=decode_body, settings=settings(namespace, url, replica_id=replica_id, **kw)
    )
    await stack.enter_async_context(w)
    return w


async def publisher(stack: AsyncExitStack, url: str, namespace: str) -> Store:
    store = make_store(url, namespace)
    stack.push_async_callback(store.redis.aclose)
    return store


async def test_burst_of_50_publishes_every_watcher_ends_on_newest(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, redis_server.url, namespace)
    await pub.publish(body(0))
    watchers = [await start_watcher(stack, redis_server.url, namespace, f"r{i}") for i in range(5)]
    await until(lambda: all(w.current and w.current.version == 1 for w in watchers), 5, "v1")
    seen: dict[str, list[int]] = {w.replica_id: [] for w in watchers}
    for w in watchers:
        w.add_listener(lambda new, old, rid=w.replica_id: seen[rid].append(new.version))
    for i in range(1, 51):
        await pub.publish(body(i))
    await until(lambda: all(w.current and w.current.version == 51 for w in watchers), 5, "v51")
    for w in watchers:
        assert w.overlaps == 0
        assert w.current is not None and w.current.value.metadata["n"] == 50
        applied = seen[w.replica_id]
        assert applied == sorted(set(applied)) and applied[-1] == 51  # only ever forward

    async def reported() -> dict[str, int]:
        return {i.status.replica_id: i.status.version for i in await pub.replicas()}

    expected = {f"r{i}": 51 for i in range(5)}
    async with asyncio.timeout(5):
        while await reported() != expected:  # noqa: ASYNC110 - polling Redis
            await asyncio.sleep(0.02)


async def test_invalid_document_in_redis_is_nacked_and_old_config_serves(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, redis_server.url, namespace)
    await pub.publish(body(1))
    w = await start_watcher(stack, redis_server.url, namespace)
    await until(lambda: w.current and w.current.version == 1, 5, "v1 applied")

    bad = canonical(decode_body(body(2))).replace(b'"provider":"upstream-a"', b'"provider":"x"')
    await pub.publish(bad)  # straight past the admin's checks
    await until(lambda: w.status().state == "rejected", 5, "NACK")
    st = w.status()
    assert st.rejected_version == 2
    assert st.reason and "models[0].deployments[0].provider: unknown provider 'x'" in st.reason
    assert w.current is not None and w.current.version == 1  # still serving v1

    # The NACK reaches Redis with the next report (coalesced: soon, not at once).
    await eventually(
        lambda: _reported_state(pub, "r1"), timeout=5, what="the NACK reported to Redis"
    )
    reported = {i.status.replica_id: i.status for i in await pub.replicas()}
    assert reported["r1"].state == "rejected" and reported["r1"].version == 1

    # Not retried in a loop: later syncs see it as already handled.
    rejects = w.metrics.rejects._value.get()  # type: ignore[attr-defined]
    for _ in range(3):
        assert await w.sync_once() is SyncOutcome.UP_TO_DATE
    assert w.metrics.rejects._value.get() == rejects  # type: ignore[attr-defined]

    # A good version after the bad one applies and clears the rejection.
    await pub.publish(body(3))
    await until(lambda: w.current and w.current.version == 3, 5, "v3 applied")
    assert w.status().state == "applied"


async def test_record_with_wrong_checksum_is_rejected(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, redis_server.url, namespace)
    await pub.publish(body(1))
    w = await start_watcher(stack, redis_server.url, namespace)
    await until(lambda: w.current and w.current.version == 1, 5, "v1 applied")

    # Forge version 2 by hand: a valid body under someone else's checksum.
    await forge_head(pub, 2, body(2), sha256=sha256_hex(b"other"))
    await pub.redis.publish(pub.keys.changes, b"{}")
    await until(lambda: w.status().state == "rejected", 5, "NACK")
    assert "checksum mismatch" in (w.status().reason or "")
    assert w.current is not None and w.current.version == 1


async def test_killed_pubsub_connection_still_reaches_head_within_reconcile(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, redis_server.url, namespace)
    await pub.publish(body(1))
    w = await start_watcher(stack, redis_server.url, namespace)
    await until(lambda: w.current and w.current.version == 1 and w.subscribed, 5, "v1 applied")

    killed = await pub.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed >= 1
    await pub.publish(body(2))
    await until(lambda: w.current and w.current.version == 2, RECONCILE_S + 0.5, "v2 applied")


async def test_missed_message_is_caught_by_reconcile(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, redis_server.url, namespace)
    await pub.publish(body(1))
    w = await start_watcher(stack, redis_server.url, namespace)
    await until(lambda: w.current and w.current.version == 1, 5, "v1 applied")
    # Move head without any channel message (as if the message was lost).
    await forge_head(pub, 2, body(2))
    await until(lambda: w.current and w.current.version == 2, RECONCILE_S + 0.5, "reconcile")
    assert w.current is not None and w.current.value.metadata["n"] == 2


@pytest.mark.slow
async def test_redis_restarted_empty_watchers_keep_config_then_follow_new_epoch(
    own_redis: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, own_redis.url, namespace)
    for i in range(5):
        await pub.publish(body(i))
    old_epoch = (await pub.head()).epoch
    watchers = [await start_watcher(stack, own_redis.url, namespace, f"r{i}") for i in range(3)]
    await until(lambda: all(w.current and w.current.version == 5 for w in watchers), 5, "v5")

    own_redis.restart(empty=True)
    # Let every watcher reconcile twice against the empty store: they keep serving v5.
    before = [w.sync_count for w in watchers]
    await until(
        lambda: all(w.sync_count >= b + 2 for w, b in zip(watchers, before, strict=True)),
        5,
        "syncs against the empty store",
    )
    for w in watchers:
        assert w.current is not None and w.current.version == 5
        assert w.current.epoch == old_epoch

    # The first publish of the new lineage is version 1: smaller, but newer.
    r = await pub.publish(body(100))
    assert r.version == 1 and r.epoch != old_epoch
    await until(
        lambda: all(
            w.current and (w.current.epoch, w.current.version) == (r.epoch, 1) for w in watchers
        ),
        5,
        "new epoch v1",
    )
    assert all(not w.current.stale for w in watchers if w.current)


async def test_start_without_redis_serves_snapshot_marked_stale(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack, tmp_path: Path
) -> None:
    snap = tmp_path / "lkg.json"
    pub = await publisher(stack, redis_server.url, namespace)
    await pub.publish(body(7))
    async with AsyncExitStack() as first:
        w = await start_watcher(first, redis_server.url, namespace, snapshot_path=snap)
        await until(lambda: w.current and w.current.version == 1, 5, "v1 applied")
        await until(snap.exists, 5, "snapshot file")

    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    w2 = await start_watcher(stack, dead_url, namespace, "r2", snapshot_path=snap)
    assert w2.ready and w2.current is not None
    assert (w2.current.version, w2.current.stale) == (1, True)
    assert w2.current.value.metadata["n"] == 7
    assert w2.status().stale
    await until(lambda: w2.sync_count >= 1, 5, "a failed sync")
    assert w2.metrics.redis_connected._value.get() == 0  # type: ignore[attr-defined]


async def test_start_without_redis_or_snapshot_is_not_ready(
    namespace: str, stack: AsyncExitStack, tmp_path: Path
) -> None:
    dead_url = f"redis://127.0.0.1:{free_port()}/0"
    w = await start_watcher(stack, dead_url, namespace, snapshot_path=tmp_path / "none.json")
    await until(lambda: w.sync_count >= 1, 5, "a failed sync")
    assert not w.ready and w.status().state == "pending"


@pytest.mark.slow
async def test_stale_snapshot_replica_converges_when_redis_appears(
    namespace: str, stack: AsyncExitStack, tmp_path: Path
) -> None:
    snap = tmp_path / "lkg.json"
    server = RedisServer()
    server.start()
    stack.callback(server.cleanup)
    pub = await publisher(stack, server.url, namespace)
    await pub.publish(body(1))
    async with AsyncExitStack() as first:
        await start_watcher(first, server.url, namespace, snapshot_path=snap)
        await until(snap.exists, 5, "snapshot file")
    server.stop(hard=True)

    w2 = await start_watcher(stack, server.url, namespace, "r2", snapshot_path=snap)
    assert w2.current is not None and w2.current.stale
    server.start()  # same port, data gone (no persistence): a new lineage
    pub2 = await publisher(stack, server.url, namespace)
    await pub2.publish(body(2))
    await until(
        lambda: w2.current and w2.current.version == 1 and not w2.current.stale,
        10,
        "new lineage applied",
    )
    assert w2.current is not None and w2.current.value.metadata["n"] == 2


async def test_watcher_refuses_a_second_start(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    w = await start_watcher(stack, redis_server.url, namespace)
    with pytest.raises(RuntimeError, match="starts once"):
        await w.start()


async def test_store_restored_from_an_older_backup_is_followed_not_skipped(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, redis_server.url, namespace)
    for i in range(3):
        await pub.publish(body(i))
    w = await start_watcher(stack, redis_server.url, namespace)
    await until(lambda: w.current and w.current.version == 3, 5, "v3 applied")
    old_v3 = w.current.sha256 if w.current else ""
    for _ in range(200):  # bounded: the replica reports v3 soon after applying it
        if any(r.status.version == 3 for r in await pub.replicas()):
            break
        await asyncio.sleep(0.02)

    # Redis comes back from a backup taken at version 2: same epoch, v3 is gone.
    k, r = pub.keys, pub.redis
    await r.set(k.head, 2)
    await r.set(k.seq, 2)
    await r.delete(k.record(3))
    await r.zrem(k.history, 3)
    await w.sync_once()
    assert w.current is not None and w.current.version == 3 and w.current.stale

    # The replica still reports v3 (its status outlived the restore, or its next heartbeat
    # writes it again): the next publish is numbered above it, never 3 again, and the
    # replica takes it.
    r3 = await pub.publish(body(42))
    assert r3.version == 4 and r3.sha256 != old_v3
    await until(lambda: w.current and w.current.sha256 == r3.sha256, 5, "the new v3")
    assert w.current is not None and not w.current.stale
    assert w.current.value.metadata["n"] == 42


async def test_a_transient_bad_head_does_not_wedge_the_replica(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    """A head moved far ahead for a moment (no record there) and then restored: the replica
    reports the damage, tells the truth again once it is gone, and follows the next valid
    version without a restart."""
    w = await start_watcher(stack, redis_server.url, namespace)
    pub = await publisher(stack, redis_server.url, namespace)
    await pub.publish(body(1))
    await until(lambda: w.current and w.current.version == 1, 5, "v1 applied")
    await pub.redis.set(pub.keys.head, 50)
    w.trigger()
    await until(lambda: w.status().rejected_version == 50, 5, "missing head reported")
    assert w.status().state == "rejected" and w.current and w.current.version == 1
    await pub.redis.set(pub.keys.head, 1)
    w.trigger()
    await until(lambda: w.status().state == "applied", 5, "truth once head is restored")
    assert w.status().rejected_version is None
    await pub.publish(body(2))
    await until(lambda: w.current and w.current.version == 2, 5, "v2 followed, no restart")


async def test_a_watcher_cut_from_redis_says_stale_until_a_read_confirms_it(
    own_redis: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, own_redis.url, namespace)
    await pub.publish(body(1))
    w = await start_watcher(stack, own_redis.url, namespace)
    await until(lambda: w.current and w.current.version == 1, 5, "v1 applied")
    assert w.current is not None and not w.current.stale
    own_redis.pause()  # no answers (a partition), the data kept
    try:
        w.trigger()
        await until(lambda: w.current is not None and w.current.stale, 10, "stale while cut off")
        assert w.status().stale and w.current.version == 1  # still serving what it had
    finally:
        own_redis.resume()
    w.trigger()
    await until(lambda: w.current is not None and not w.current.stale, 10, "confirmed again")
