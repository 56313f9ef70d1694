"""After a failover, the first publish on the new server numbers above what the replicas
run, even when their reports of it were lost with the old primary (durability.FENCE)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

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
        # The fence dates the server's start by its whole seconds of uptime: in its first
        # second every report looks older than the start.
        deadline = time.monotonic() + 2
        while int((await store.redis.info("server"))["uptime_in_seconds"]) < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await store.report(status("here", 2, first.epoch))
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


async def test_a_publish_reads_the_lineages_mark_not_every_status(
    redis_server: RedisServer, namespace: str
) -> None:
    store = make_store(redis_server.url, namespace)
    admin = redis_server.client()
    try:
        first = await store.publish(body(1))
        for i in range(50):
            await store.report(status(f"r{i}", first.version, first.epoch))
        await store.report(status("lost", 7, first.epoch))
        await store.report(status("lost", 2, first.epoch))  # the mark only rises
        admin.config_resetstat()
        assert (await store.publish(body(2))).version == 8
        # One score read, not the 51 statuses: a big fleet's publish stays short.
        assert "cmdstat_hvals" not in admin.info("commandstats")
    finally:
        admin.close()
        await close(store.redis)


async def test_without_a_readable_mark_a_publish_reads_the_statuses(
    redis_server: RedisServer, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = make_store(redis_server.url, namespace)
    try:
        first = await store.publish(body(1))
        # A replica of a release before the mark writes its status only.
        await store.report(status("old", 7, first.epoch))
        await store.redis.delete(store.keys.reported)
        assert (await store.publish(body(2))).version == 8

        # A damaged mark: reports still land (one warning names the key), and publishes
        # number from the statuses.
        await store.redis.set(store.keys.reported, "not a sorted set")
        with caplog.at_level(logging.WARNING, logger="configbus.store"):
            await store.report(status("old", 12, first.epoch))
            await store.report(status("old", 12, first.epoch))
        warned = [r.getMessage() for r in caplog.records if store.keys.reported in r.getMessage()]
        assert len(warned) == 1, warned
        assert (await store.publish(body(3))).version == 13
    finally:
        await close(store.redis)


async def test_a_replica_user_not_granted_the_mark_still_reports(
    redis_server: RedisServer, namespace: str
) -> None:
    """An ACL written before the mark (docs/acl.md) refuses its ZADD: the status lands, the
    report keeps its connection, and publishes number from the statuses."""
    admin = redis_server.client()
    user, password = f"old-replica-{namespace}", "pw"
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{password}"], keys=[f"%RW~cb:{{{namespace}}}:replicas"],
        commands=["-@all", "+hset", "+zadd", "+time", "+ping", "+select", "+client"],
    )  # fmt: skip
    store = make_store(redis_server.url, namespace)
    replica = make_store(
        redis_server.url.replace("redis://", f"redis://{user}:{password}@"), namespace
    )
    try:
        first = await store.publish(body(1))
        accepted = int(admin.info("stats")["total_connections_received"])
        for v in (5, 6, 7):
            await replica.report(status("old", v, first.epoch))
        assert int(admin.info("stats")["total_connections_received"]) - accepted <= 2
        assert admin.zscore(store.keys.reported, first.epoch) is None
        assert (await store.publish(body(2))).version == 8
    finally:
        admin.acl_deluser(user)
        admin.close()
        await close(replica.redis)
        await close(store.redis)
