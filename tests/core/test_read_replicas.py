"""Watchers reading through Redis read replicas (`redis-server --replicaof`): they follow the
primary's publishes, and a paused, dead or lagging read replica never takes one backwards;
its watchers reach head through the primary within the reconcile interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis

from configbus.codec import decode_body
from configbus.connection import connect, connect_read
from configbus.document import Document
from configbus.store import Store
from configbus.tooling.localredis import LocalRedis
from configbus.watcher import Watcher
from tests.core.helpers import body, make_store
from tests.core.test_watcher import RECONCILE_S, publisher, settings, stack, until
from tests.support import wait_for

__all__ = ["stack"]

# A paused read replica costs a read timeout before the primary answers.
WITHIN_S = RECONCILE_S + 2.0


class Topology:
    def __init__(self) -> None:
        self.primary = LocalRedis().start()
        self.replicas: list[LocalRedis] = []
        for _ in range(2):
            r = LocalRedis(extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)])
            self.replicas.append(r.start())
        for r in self.replicas:
            self.wait_linked(r)

    def wait_linked(self, r: LocalRedis) -> None:
        client = redis.Redis.from_url(r.url)
        try:
            wait_for(
                lambda: client.info("replication").get("master_link_status") == "up",
                timeout=10,
                what=f"{r.url} replicating",
            )
        finally:
            client.close()

    def cleanup(self) -> None:
        for r in (*self.replicas, self.primary):
            r.cleanup()


@pytest.fixture
def topology() -> Iterator[Topology]:
    t = Topology()
    yield t
    t.cleanup()


async def watchers(
    stack: AsyncExitStack, topo: Topology, namespace: str, n: int = 4
) -> tuple[list[Watcher[Document, Document]], dict[str, list[int]]]:
    urls = ",".join(r.url for r in topo.replicas)
    out, applied = [], {}
    for i in range(n):
        rid = f"r{i}"
        primary = make_store(topo.primary.url, namespace)
        read_redis = connect_read(urls, rid)
        assert read_redis is not None
        reads = Store(read_redis, namespace)
        for s in (primary, reads):
            stack.push_async_callback(s.redis.aclose)
        w: Watcher[Document, Document] = Watcher(
            primary,
            decode=decode_body,
            settings=settings(namespace, topo.primary.url, replica_id=rid),
            reads=reads,
        )
        applied[rid] = []
        w.add_listener(lambda new, old, rid=rid: applied[rid].append(new.version))
        await stack.enter_async_context(w)
        out.append(w)
    return out, applied


def reader_of(w: Watcher[Any, Any], topo: Topology) -> LocalRedis:
    replica = w.reads.replica
    assert replica is not None
    port = replica.redis.connection_pool.connection_kwargs["port"]
    return next(r for r in topo.replicas if r.port == port)


def on(ws: list[Watcher[Any, Any]], version: int) -> bool:
    return all(w.current is not None and w.current.version == version for w in ws)


def forward_only(applied: dict[str, list[int]]) -> None:
    for rid, versions in applied.items():
        assert versions == sorted(set(versions)), f"{rid} went backwards: {versions}"


async def numsub(url: str, channel: str) -> int:
    client = connect(url)
    try:
        res = await client.pubsub_numsub(channel)
        return int(res[0][1])
    finally:
        await client.aclose()


async def test_watchers_spread_over_read_replicas_follow_the_primary(
    topology: Topology, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, topology.primary.url, namespace)
    await pub.publish(body(0))
    ws, applied = await watchers(stack, topology, namespace)
    assert {reader_of(w, topology).port for w in ws} == {r.port for r in topology.replicas}
    await until(lambda: on(ws, 1), 5, "v1 everywhere")
    for i in range(1, 6):
        await pub.publish(body(i))
    await until(lambda: on(ws, 6), 5, "v6 everywhere")
    forward_only(applied)
    # Reads and hints came through the read replicas; the primary only took status writes.
    assert all(w.reads.primary_reads == 0 for w in ws)
    channel = pub.keys.changes
    assert await numsub(topology.primary.url, channel) == 0
    assert sum([await numsub(r.url, channel) for r in topology.replicas]) == len(ws)

    async def reported() -> dict[str, int]:
        return {i.status.replica_id: i.status.version for i in await pub.replicas()}

    async with asyncio.timeout(5):  # status goes to the primary
        while await reported() != {w.replica_id: 6 for w in ws}:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_paused_read_replica_sends_its_watchers_to_the_primary(
    topology: Topology, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, topology.primary.url, namespace)
    await pub.publish(body(0))
    ws, applied = await watchers(stack, topology, namespace)
    await until(lambda: on(ws, 1), 5, "v1 everywhere")
    paused = topology.replicas[0]
    paused.pause()
    try:
        t0 = time.monotonic()
        await pub.publish(body(1))
        await pub.publish(body(2))
        await until(lambda: on(ws, 3), WITHIN_S, "v3 everywhere, around the paused replica")
        took = time.monotonic() - t0
        stuck = [w for w in ws if reader_of(w, topology) is paused]
        assert stuck and all(w.reads.primary_reads > 0 for w in stuck)
        assert took < WITHIN_S
    finally:
        paused.resume()
    # Back: the paused replica's backlog (old hints) replays; nobody moves back.
    await pub.publish(body(3))
    await until(lambda: on(ws, 4), WITHIN_S, "v4 everywhere")
    forward_only(applied)


async def test_a_lagging_read_replica_never_takes_a_watcher_back(
    topology: Topology, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, topology.primary.url, namespace)
    await pub.publish(body(0))
    ws, applied = await watchers(stack, topology, namespace)
    await until(lambda: on(ws, 1), 5, "v1 everywhere")
    # Cut one replica off: it keeps answering, with old data, and hears no hints.
    lagging = topology.replicas[1]
    admin = redis.Redis.from_url(lagging.url)
    try:
        admin.replicaof("NO", "ONE")
        t0 = time.monotonic()
        await pub.publish(body(1))
        behind = [w for w in ws if reader_of(w, topology) is lagging]
        assert behind
        await until(lambda: on(ws, 2), WITHIN_S, "v2 everywhere, past the lagging replica")
        assert time.monotonic() - t0 < WITHIN_S
        assert all(w.reads.lagging_reads > 0 for w in behind)
        # Reconcile ticks keep finding it behind and keep reading from the primary.
        await until(lambda: all(w.sync_count > 3 for w in ws), 5, "a few reconciles")
        assert on(ws, 2)
        assert all(w.current is not None and not w.current.stale for w in ws)
        admin.replicaof("127.0.0.1", str(topology.primary.port))
    finally:
        admin.close()
    topology.wait_linked(lagging)
    await pub.publish(body(2))
    await until(lambda: on(ws, 3), WITHIN_S, "v3 everywhere")
    forward_only(applied)


async def test_a_dead_read_replica_is_bypassed(
    topology: Topology, namespace: str, stack: AsyncExitStack
) -> None:
    pub = await publisher(stack, topology.primary.url, namespace)
    await pub.publish(body(0))
    ws, applied = await watchers(stack, topology, namespace)
    await until(lambda: on(ws, 1), 5, "v1 everywhere")
    topology.replicas[0].stop(hard=True)
    await pub.publish(body(1))
    await until(lambda: on(ws, 2), WITHIN_S, "v2 everywhere, without the dead replica")
    topology.replicas[0].start()
    topology.wait_linked(topology.replicas[0])
    await pub.publish(body(2))
    await until(lambda: on(ws, 3), WITHIN_S, "v3 everywhere")
    forward_only(applied)
