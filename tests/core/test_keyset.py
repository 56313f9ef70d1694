"""The replica's copy of the key collection: loaded whole, then kept by the changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from configbus.channel import ChannelListener
from configbus.keyset import KeyFollower
from configbus.keystore import KeyStore, hash_key
from tests.support import RedisServer, eventually


@pytest.fixture
async def keys(redis_server: RedisServer, namespace: str) -> AsyncIterator[KeyStore]:
    r = aioredis.from_url(redis_server.url)
    yield KeyStore(r, namespace, log_cap=50)
    await r.aclose()


async def follow(store: KeyStore, **kw: object) -> tuple[KeyFollower, asyncio.Task[None]]:
    f = KeyFollower(store, **kw)  # type: ignore[arg-type]
    await f.start()
    listener = ChannelListener(
        store.redis, {f.channel: f.on_hint}, on_subscribed=f.on_subscribed,
        running=lambda: f._running, max_backoff_s=0.5,
    )  # fmt: skip
    task = asyncio.create_task(listener.run())
    await eventually(lambda: listener.subscribed, timeout=5, what="subscribed")
    return f, task


async def stop(f: KeyFollower, task: asyncio.Task[None]) -> None:
    await f.stop()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_loads_whole_then_follows_each_change_from_its_hint(keys: KeyStore) -> None:
    made = [await keys.create(name=f"k{i}") for i in range(30)]
    f, task = await follow(keys, batch=7)
    try:
        assert len(f.table) == 30 and f.table.rev == 30
        for e, key in made:
            assert key is not None and f.table.find(hash_key(key), 0) == e
        reads = f.reads
        e, key = await keys.create(name="new")
        assert key is not None
        async with asyncio.timeout(5):
            await f.wait_for(e.revision)
        assert f.table.find(hash_key(key), 0) == e
        rev = await keys.revoke(made[0][0].id)
        async with asyncio.timeout(5):
            await f.wait_for(rev)
        assert f.table.find(hash_key(made[0][1] or ""), 0) is None
        assert f.reads == reads  # the hints carried the changes: nothing was read
    finally:
        await stop(f, task)


async def test_missed_hints_are_read_from_the_log_and_a_gap_reloads(keys: KeyStore) -> None:
    await keys.create(name="a")
    f = KeyFollower(keys)  # no subscription: only triggers find news
    await f.start()
    try:
        for i in range(5):
            await keys.create(name=f"b{i}")
        f.trigger()
        async with asyncio.timeout(5):
            await f.wait_for(6)
        assert f.reloads == 1 and len(f.table) == 6  # read from the log, no reload
        for i in range(60):  # more than the log holds
            await keys.create(name=f"c{i}")
        f.trigger()
        async with asyncio.timeout(5):
            await f.wait_for(66)
        assert f.reloads == 2 and len(f.table) == 66
    finally:
        await f.stop()


async def test_a_replaced_collection_is_reloaded_not_merged(keys: KeyStore) -> None:
    _, key = await keys.create(name="a")
    f = KeyFollower(keys)
    await f.start()
    try:
        layout = keys.layout
        await keys.redis.delete(
            layout.entries, layout.by_hash, layout.rev, layout.epoch, layout.log
        )
        e2, key2 = await keys.create(name="b")  # revision 1 again, in a new epoch
        f.trigger()
        epoch = (await keys.state()).epoch
        await eventually(lambda: f.table.epoch == epoch, timeout=5, what="the new epoch")
        assert key is not None and key2 is not None
        assert f.table.find(hash_key(key), 0) is None
        assert f.table.find(hash_key(key2), 0) == e2
    finally:
        await f.stop()


async def test_rotation_expiry_and_disable_are_judged_at_lookup(keys: KeyStore) -> None:
    e, old = await keys.create(name="a", expires_at=4e9)
    rotated, new = await keys.rotate(e.id, grace_s=30)
    f = KeyFollower(keys)
    await f.start()
    try:
        assert old is not None
        t = rotated.updated_at
        assert f.table.find(hash_key(old), t + 29) == rotated
        assert f.table.find(hash_key(old), t + 31) is None
        assert f.table.find(hash_key(new), t + 31) == rotated
        assert f.table.find(hash_key(new), 4e9) is None  # expired
        off = await keys.update(e.id, enabled=False)
        f.trigger()
        async with asyncio.timeout(5):
            await f.wait_for(off.revision)
        assert f.table.find(hash_key(new), t) is None
    finally:
        await f.stop()


async def test_the_last_known_good_file_serves_while_redis_is_down(
    own_redis: RedisServer, namespace: str, tmp_path: Path
) -> None:
    path = tmp_path / "keys.json"
    r = aioredis.from_url(own_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    store = KeyStore(r, namespace)
    e, key = await store.create(name="a")
    f = KeyFollower(store, snapshot_path=path)
    await f.start()
    await eventually(path.exists, timeout=5, what="the file")
    await f.stop()
    own_redis.stop(hard=True)
    g = KeyFollower(store, snapshot_path=path)
    await g.start()
    try:
        assert key is not None and g.stale and not g.loaded
        assert g.table.find(hash_key(key), 0) == e
    finally:
        await g.stop()
        await r.aclose()


async def test_a_replica_starts_whatever_breaks_in_the_first_load(
    keys: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, key = await keys.create(name="a")
    f = KeyFollower(keys)
    real = keys.state
    calls = 0

    async def broken() -> object:
        nonlocal calls
        calls += 1
        if calls == 1:  # what uvloop raises when a connection breaks mid-handshake
            raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")
        return await real()

    monkeypatch.setattr(keys, "state", broken)
    await f.start()  # no exception: it serves (nothing yet) and retries in the background
    try:
        assert key is not None
        await eventually(lambda: f.table.find(hash_key(key), 0) is not None, timeout=5)
        assert f.loaded and not f.stale
    finally:
        await f.stop()
