"""After a failover, the first publish on the new server numbers above what the replicas
run, even when their reports of it were lost with the old primary (durability.FENCE)."""

from __future__ import annotations

import asyncio
import time

from configbus.records import ReplicaStatus
from configbus.store import Store
from tests.core.helpers import body, close, make_store
from tests.support import RedisServer


def status(rid: str, version: int, epoch: str, ttl_s: float = 3.0) -> ReplicaStatus:
    return ReplicaStatus(replica_id=rid, state="applied", version=version, epoch=epoch, ttl_s=ttl_s)


async def as_if_failed_over(store: Store, *reported: ReplicaStatus) -> None:
    """The namespace was last published on another server, and `reported` are the statuses
    that server had (stamped before this server's process started, still alive)."""
    uptime = int((await store.redis.info("server"))["uptime_in_seconds"])
    before_start = await store.server_time() - uptime - 2
    for st in reported:
        alive = ReplicaStatus(**{**_fields(st), "ttl_s": uptime + 30})
        await store.report_at(alive, before_start)
    await store.redis.set(store.keys.server, "f" * 40)


def _fields(st: ReplicaStatus) -> dict[str, object]:
    return {f: getattr(st, f) for f in ReplicaStatus.__struct_fields__}


async def test_the_first_publish_on_a_new_server_waits_for_the_replicas_reports(
    redis_server: RedisServer, namespace: str
) -> None:
    store = make_store(redis_server.url, namespace)
    try:
        first = await store.publish(body(1))
        await as_if_failed_over(store, status("r1", first.version, first.epoch))
        # r1 ran version 7 on the old primary; its report of it comes 0.3 s after the
        # publish started, as a replica finding the new primary would send it.
        publish = asyncio.create_task(store.publish(body(2)))
        started = time.monotonic()
        await asyncio.sleep(0.3)
        assert not publish.done()
        await store.report(status("r1", 7, first.epoch))
        assert (await publish).version == 8
        assert 0.3 <= time.monotonic() - started < 1.0
        # The same server from then on: no wait.
        started = time.monotonic()
        assert (await store.publish(body(3))).version == 9
        assert time.monotonic() - started < 0.2
    finally:
        await close(store.redis)


async def test_the_wait_is_bounded_and_only_for_replicas_not_heard_since_the_server_started(
    redis_server: RedisServer, namespace: str
) -> None:
    store = make_store(redis_server.url, namespace, failover_wait_s=0.5)
    try:
        first = await store.publish(body(1))
        await as_if_failed_over(store, status("silent", first.version, first.epoch))
        started = time.monotonic()
        assert (await store.publish(body(2))).version == 2  # nobody reported: after the bound
        assert 0.5 <= time.monotonic() - started < 1.0

        # A restart: replicas that reported since the server started, and replicas dead for
        # longer than their ttl, are not waited for.
        await store.redis.hdel(store.keys.replicas, "silent")
        await store.report(status("here", 2, first.epoch))
        dead = ReplicaStatus(replica_id="gone", state="applied", version=1, ttl_s=0.1)
        await store.report_at(dead, await store.server_time() - 10)
        await store.redis.set(store.keys.server, "f" * 40)
        started = time.monotonic()
        assert (await store.publish(body(3))).version == 3
        assert time.monotonic() - started < 0.2
    finally:
        await close(store.redis)


async def test_a_publish_numbers_above_every_version_a_replica_of_the_lineage_reports(
    redis_server: RedisServer, namespace: str
) -> None:
    store = make_store(redis_server.url, namespace)
    try:
        first = await store.publish(body(1))
        await store.report(status("lost", 7, first.epoch))  # ran a version the server lost
        await store.report(status("other lineage", 50, "0" * 16))
        # A replica id that spells a bigger version inside its JSON string is not read as one.
        await store.report(status('x,"version":90,"epoch":"' + first.epoch + '"', 1, first.epoch))
        assert (await store.publish(body(2))).version == 8
    finally:
        await close(store.redis)
