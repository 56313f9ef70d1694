"""Status reports go over one connection of their own (configbus.pinned): reused from report
to report, replaced after the server drops it, closed with the client."""

from __future__ import annotations

import pytest

from configbus.errors import StoreError
from configbus.pinned import pack
from configbus.records import ReplicaStatus
from configbus.store import Store
from tests.core.helpers import make_store
from tests.support import RedisServer


def status(version: int) -> ReplicaStatus:
    return ReplicaStatus(replica_id="r1", state="applied", version=version, epoch="e")


async def reported_version(store: Store) -> int:
    infos = await store.replicas()
    return next(i.status.version for i in infos if i.status.replica_id == "r1")


async def test_reports_share_one_connection_and_survive_a_dropped_one(
    redis_server: RedisServer, namespace: str
) -> None:
    store = make_store(redis_server.url, namespace)
    admin = redis_server.client()
    try:
        now = await store.server_time()
        accepted = int(admin.info("stats")["total_connections_received"])
        for v in range(1, 51):
            await store.report_at(status(v), now)
        opened = int(admin.info("stats")["total_connections_received"]) - accepted
        assert opened <= 1, f"50 reports opened {opened} connections"
        assert await reported_version(store) == 50

        # The server drops every client connection (as Sentinel does to a demoted primary):
        # the report goes out again at once on a new connection.
        admin.client_kill_filter(_type="normal", skipme=True)
        await store.report_at(status(51), now)
        assert await reported_version(store) == 51

        # An error reply (here: the hash is now a string) fails the report; the report
        # after the key is repaired succeeds.
        await store.redis.set(store.keys.replicas, "not a hash")
        with pytest.raises(StoreError):
            await store.report_at(status(52), now)
        await store.redis.delete(store.keys.replicas)
        await store.report_at(status(53), now)
        assert await reported_version(store) == 53
    finally:
        await store.redis.aclose()
    # Closing the client closed the pinned connection (no socket left to the collector).
    names = [c for c in admin.client_list() if c.get("cmd") in ("hset", "hvals")]
    admin.close()
    assert names == [], names


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    from redis.asyncio.connection import Connection

    commands = [
        ("ZADD", "cb:{ns}:reported", "GT", 12, "a1b2"),
        ("HSET", "cb:{ns}:replicas", "réplica-1", b'{"last_seen":1.5,"x":"\xc3\xa9"}'),
        ("SET", "k", 2.25, ""),
    ]
    assert pack(commands) == b"".join(Connection().pack_commands(commands))
    with pytest.raises(TypeError):
        pack([("SET", "k", True)])
