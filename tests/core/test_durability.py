"""After a failover, the first publish on the new server numbers above what the replicas
run, even when their reports of it were lost with the old primary (durability.FENCE)."""

from __future__ import annotations

import asyncio
import time

from configbus.records import ReplicaStatus
from configbus.store import Store
from tests.core.helpers import body, close, make_store
from tests.support import RedisServer


def status(rid: str, version: int, epoch: str) -> ReplicaStatus:
    return ReplicaStatus(replica_id=rid, state="applied", version=version, epoch=epoch, ttl_s=3)


async def as_if_failed_over(store: Store) -> None:
    """The namespace was last published on another server (a promoted replica's copy)."""
    await store.redis.set(store.keys.server, "f" * 40)


async def test_the_first_publish_on_a_new_server_waits_for_the_replicas_reports(
    redis_server: RedisServer, namespace: str
) -> None:
    store = make_store(redis_server.url, namespace)
    try:
        first = await store.publish(body(1))
        await store.report(status("r1", first.version, first.epoch))
        await as_if_failed_over(store)
        # r1 ran version 7 on the old primary; its report of it comes 0.3 s after the
        # publish started, as a replica finding the new primary would send it.
        publish = asyncio.create_task(store.publish(body(2)))
        started = time.monotonic()
        await asyncio.sleep(0.3)
        assert not publish.done()
        await store.report(status("r1", 7, first.epoch))
        result = await publish
        assert result.version == 8
        assert 0.3 <= time.monotonic() - started < 1.0
        # The same server from then on: no wait.
        started = time.monotonic()
        assert (await store.publish(body(3))).version == 9
        assert time.monotonic() - started < 0.2
    finally:
        await close(store.redis)


async def test_the_wait_is_bounded_and_skips_replicas_that_are_dead(
    redis_server: RedisServer, namespace: str
) -> None:
    store = make_store(redis_server.url, namespace, failover_wait_s=0.5)
    try:
        first = await store.publish(body(1))
        await store.report(status("silent", first.version, first.epoch))
        await as_if_failed_over(store)
        started = time.monotonic()
        assert (await store.publish(body(2))).version == 2  # nobody reported: after the bound
        assert 0.5 <= time.monotonic() - started < 1.0

        # A replica dead for longer than its ttl is not waited for at all.
        old = ReplicaStatus(replica_id="gone", state="applied", version=1, ttl_s=0.1)
        await store.report_at(old, await store.server_time() - 10)
        await as_if_failed_over(store)
        started = time.monotonic()
        await store.report(status("silent", 2, first.epoch))  # the live one is here already
        await asyncio.sleep(0.01)
        waiter = asyncio.create_task(store.publish(body(3)))
        await asyncio.sleep(0.05)
        await store.report(status("silent", 2, first.epoch))  # and reports again
        assert (await waiter).version == 3
        assert time.monotonic() - started < 0.4
    finally:
        await close(store.redis)
