"""Hints that carry their record: applied without a read when the rule allows, checked like
any record, and never for a rollout's version."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

from configbus.codec import sha256_hex
from configbus.hints import inline_applies, is_news, parse_hint
from configbus.rollout import Rollout, Selector, Stage
from configbus.store import Store
from tests.core.helpers import body, make_store
from tests.core.test_watcher import publisher, stack, start_watcher, until
from tests.support import RedisServer

__all__ = ["stack"]


async def hints_of(store: Store, n: int) -> tuple[asyncio.Task[list[bytes]], asyncio.Event]:
    """A task collecting the next `n` messages on the store's change channel."""
    pubsub = store.redis.pubsub()
    await pubsub.subscribe(store.keys.changes)
    ready = asyncio.Event()

    async def collect() -> list[bytes]:
        out: list[bytes] = []
        try:
            async with asyncio.timeout(5):
                while len(out) < n:
                    msg = await pubsub.get_message(timeout=0.1)
                    if msg and msg["type"] == "subscribe":
                        ready.set()
                    elif msg and msg["type"] == "message":
                        out.append(msg["data"])
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        return out

    task = asyncio.create_task(collect())
    await asyncio.wait_for(ready.wait(), 5)
    return task, ready


async def test_small_plain_publishes_carry_their_record_rollouts_and_big_ones_do_not(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    store = make_store(redis_server.url, namespace, inline_max_bytes=4096)
    stack.push_async_callback(store.redis.aclose)
    task, _ = await hints_of(store, 3)
    small, big = body(1), body(2, pad=8000)
    await store.publish(small, author="ann", message='say "hi" / bye')
    await store.publish(big)
    now = 0.0
    rollout = Rollout(
        id="ro-1", version=0, sha256="", epoch="", base=0, started_at=now, stage_started_at=now,
        stages=(Stage(selector=Selector(labels={"tier": "canary"}), bake_s=0),),
    )  # fmt: skip
    await store.publish(body(3), rollout=rollout)
    first, second, third = await task

    hint, record = parse_hint(first)
    assert record is not None and record.body == small and record.version == 1
    assert record.author == "ann" and record.message == 'say "hi" / bye'
    assert record == await store.get(1)  # the very record the store holds
    assert hint.rev == 1
    assert parse_hint(second)[1] is None and b"\n" not in second  # too big: fetch
    hint3, record3 = parse_hint(third)
    assert record3 is None and hint3.rollout and b"\n" not in third  # a rollout: never inline
    assert hint3.rev == 3


def test_a_damaged_hinted_body_is_not_used() -> None:
    good = body(1)
    header = (
        b'{"version":2,"sha256":"%s","epoch":"e","rev":2,"parent":1,"created_at":1.5,'
        b'"kind":"publish","author":"","message":""}' % sha256_hex(good).encode()
    )
    assert parse_hint(header + b"\n" + good)[1] is not None
    hint, record = parse_hint(header + b"\n" + good[:-1] + b" ")
    assert record is None and hint.version == 2  # the replica reads the store instead


def test_the_inline_rule() -> None:
    header = b'{"version":5,"sha256":"%s","epoch":"e","parent":4,"created_at":1.0}'
    b = body(5)
    _, record = parse_hint(header % sha256_hex(b).encode() + b"\n" + b)
    assert record is not None
    assert inline_applies(record, ("e", 4))
    assert not inline_applies(record, ("e", 5))  # not newer
    assert not inline_applies(record, ("e", 9))  # older than what runs
    assert not inline_applies(record, ("other", 1))  # a new lineage goes through the store
    assert not inline_applies(record, None)  # nothing yet: read the store
    hint, _ = parse_hint(b'{"version":5,"epoch":"e"}')
    assert is_news(hint, "e", 4, "x") and not is_news(hint, "e", 5, "")


async def test_a_watcher_applies_hinted_records_without_reading_redis(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, redis_server.url, namespace)
    await pub.publish(body(0))
    w = await start_watcher(stack, redis_server.url, namespace, reconcile_interval_s=30.0)
    await until(lambda: w.current is not None and w.subscribed, 5, "v1 and subscribed")
    # The first hinted version: once it is applied, the read the subscription asked for is
    # done (or was skipped for it), so what follows counts only the hints' own work.
    await pub.publish(body(1))
    await until(lambda: w.current and w.current.version == 2, 5, "v2")
    reads = w.reads.primary_reads
    for i in range(2, 6):
        await pub.publish(body(i))
        await until(lambda i=i: w.current and w.current.version == i + 1, 5, f"v{i + 1}")
    assert w.reads.primary_reads == reads  # every one came in its hint
    assert w.current is not None and w.current.value.metadata["n"] == 5
    assert w.overlaps == 0


async def test_no_reconcile_read_while_hinted_records_flow_and_one_soon_after(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    """Each applied hint confirms head as of its publish, so the reconcile tick waits; once
    hints stop, a tick reads within the interval again (a lost hint is still found)."""
    pub = await publisher(stack, redis_server.url, namespace)
    await pub.publish(body(0))
    w = await start_watcher(stack, redis_server.url, namespace, reconcile_interval_s=0.4)
    await until(lambda: w.current is not None and w.subscribed, 5, "v1 and subscribed")
    await pub.publish(body(1))  # applied from its hint: the subscription's read is behind us
    await until(lambda: w.current and w.current.version == 2, 5, "v2")
    reads = w.reads.primary_reads
    for i in range(2, 13):  # 1.1 s of publishes, nearly three reconcile intervals
        await pub.publish(body(i))
        await until(lambda i=i: w.current and w.current.version == i + 1, 5, f"v{i + 1}")
        await asyncio.sleep(0.1)
    assert w.reads.primary_reads == reads
    await until(lambda: w.reads.primary_reads > reads, 0.6, "a reconcile read once hints stop")


async def test_a_refused_version_is_not_decoded_again_when_its_hint_comes_late(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    """A read can find a bad head before its hint arrives; the hint then carries the same
    record, and the watcher must not check (and refuse) it a second time."""
    pub = await publisher(stack, redis_server.url, namespace)
    await pub.publish(body(0))
    w = await start_watcher(stack, redis_server.url, namespace, reconcile_interval_s=30.0)
    await until(lambda: w.current is not None and w.subscribed, 5, "v1 and subscribed")
    await pub.publish(b'{"models": "not a list"}')
    await until(lambda: w.status().state == "rejected", 5, "v2 refused")
    rejects = w.metrics.rejects._value.get()  # type: ignore[attr-defined]
    w._inline = await pub.get(2)  # the late hint's record
    await w.sync_once()
    assert w.metrics.rejects._value.get() == rejects  # type: ignore[attr-defined]
    assert w.status().state == "rejected" and w.current is not None
    assert w.current.version == 1
