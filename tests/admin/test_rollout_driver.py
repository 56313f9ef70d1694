"""The rollout driver against real Redis and real watchers whose traffic the test sets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import AsyncExitStack
from typing import Any

from admin.rollouts import Driver, activate
from configbus.codec import decode_body
from configbus.document import Document
from configbus.rollout import (
    LATENCY_BUCKETS_MS,
    Guard,
    Rollout,
    RolloutState,
    Selector,
    Stage,
    Traffic,
)
from configbus.rollout_store import RolloutStore
from configbus.store import Store
from configbus.watcher import Watcher
from tests.core.helpers import body, make_store
from tests.core.test_watcher import settings, stack, until
from tests.support import RedisServer

__all__ = ["stack"]


class Fleet:
    """Watchers (replicas) whose reported traffic is whatever the test says."""

    def __init__(self, stack: AsyncExitStack, url: str, ns: str) -> None:
        self.stack, self.url, self.ns = stack, url, ns
        self.traffic: dict[str, dict[str, Traffic]] = {}
        self.watchers: dict[str, Watcher[Document, Document]] = {}

    async def add(self, rid: str, **labels: str) -> Watcher[Document, Document]:
        store = make_store(self.url, self.ns)
        self.stack.push_async_callback(store.redis.aclose)
        self.traffic[rid] = {}
        w: Watcher[Document, Document] = Watcher(
            store,
            decode=decode_body,
            settings=settings(self.ns, self.url, replica_id=rid),
            labels=labels,
            traffic=lambda: dict(self.traffic[rid]),
        )
        await self.stack.enter_async_context(w)
        self.watchers[rid] = w
        return w

    def serve(self, rid: str, requests: int, errors: int = 0) -> None:
        """Add requests on whatever version the replica runs now."""
        w = self.watchers[rid]
        assert w.current is not None
        key = str(w.current.version)
        old = self.traffic[rid].get(key, Traffic(0, 0, (0,) * (len(LATENCY_BUCKETS_MS) + 1)))
        buckets = list(old.buckets)
        buckets[1] += requests
        self.traffic[rid][key] = Traffic(
            old.requests + requests, old.errors + errors, tuple(buckets)
        )


def stores(stack: AsyncExitStack, url: str) -> Any:
    """A cached store per namespace, closed with the stack (as the admin's services do)."""
    cache: dict[str, Store] = {}

    def store_for(ns: str) -> Store:
        if ns not in cache:
            cache[ns] = make_store(url, ns)
            stack.push_async_callback(cache[ns].redis.aclose)
        return cache[ns]

    return store_for


async def start(store: Store, *stages: Stage, guard: Guard | None = None) -> None:
    now = time.time()
    r = Rollout(id=f"ro-{now}", version=0, sha256="", epoch="", base=0, stages=stages,
                guard=guard or Guard(min_requests=10), started_at=now, stage_started_at=now)  # fmt: skip
    await store.publish(body(99), rollout=r)
    await activate(store)


def on(w: Watcher[Any, Any], v: int) -> bool:
    return w.current is not None and w.current.version == v


async def drive_until_ended(fleet: Fleet, driver: Driver, store: Store, errors: int) -> Rollout:
    async def loop() -> Rollout:
        while True:
            for rid in fleet.watchers:
                fleet.serve(rid, 5, errors if fleet.watchers[rid].current.staged else 0)  # type: ignore[union-attr]
            await driver.tick()
            r = await RolloutStore(store).get()
            assert r is not None
            if not r.running:
                return r
            await asyncio.sleep(0.1)

    async with asyncio.timeout(10):
        return await loop()


async def test_a_failing_canary_is_aborted_by_the_guard_and_a_good_one_promoted(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    store = make_store(redis_server.url, namespace)
    stack.push_async_callback(store.redis.aclose)
    await store.publish(body(0))
    fleet = Fleet(stack, redis_server.url, namespace)
    canary = await fleet.add("c1", tier="canary")
    stable = [await fleet.add(f"s{i}") for i in range(2)]
    await until(lambda: all(on(w, 1) for w in fleet.watchers.values()), 5, "v1 everywhere")
    driver = Driver(store.redis, store_for=stores(stack, redis_server.url), tick_s=0.05)

    await start(store, Stage(selector=Selector(labels={"tier": "canary"}), bake_s=0))
    await until(lambda: on(canary, 2), 5, "canary on v2")
    r = await drive_until_ended(fleet, driver, store, errors=5)
    assert r.state is RolloutState.ABORTED
    assert r.reason.startswith("stage 1 error rate 100% vs baseline 0% over")
    await until(lambda: on(canary, 1), 2, "canary back on head")
    assert (await store.head()).version == 1 and all(on(w, 1) for w in stable)
    audit = [e for e in await store.audit_entries() if e.action == "rollout_abort"]
    assert len(audit) == 1 and "error rate 100%" in audit[0].fields["message"]

    stages = (Stage(selector=Selector(labels={"tier": "canary"}), bake_s=0.3),
              Stage(selector=Selector(share=100), bake_s=0))  # fmt: skip
    await start(store, *stages)
    r = await drive_until_ended(fleet, driver, store, errors=0)
    assert r.state is RolloutState.PROMOTED
    assert (await store.head()).version == 3
    await until(lambda: all(on(w, 3) for w in fleet.watchers.values()), 5, "all on v3")


async def test_an_admin_dying_mid_bake_is_replaced_and_promotes_once(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    store = make_store(redis_server.url, namespace)
    stack.push_async_callback(store.redis.aclose)
    await store.publish(body(0))
    fleet = Fleet(stack, redis_server.url, namespace)
    await fleet.add("c1", tier="canary")
    await fleet.add("s1")
    await until(lambda: all(on(w, 1) for w in fleet.watchers.values()), 5, "v1 everywhere")

    def driver(name: str) -> Driver:
        return Driver(store.redis, store_for=stores(stack, redis_server.url), tick_s=0.05, lease_s=0.5,
                      holder=name)  # fmt: skip

    first, second = driver("admin-a"), driver("admin-b")
    await start(store, Stage(selector=Selector(labels={"tier": "canary"}), bake_s=1.0))
    await until(lambda: on(fleet.watchers["c1"], 2), 5, "canary on v2")
    fleet.serve("c1", 20)
    fleet.serve("s1", 20)
    await first.tick()  # admin-a takes the lease and starts judging; then it dies
    await second.tick()
    r = await RolloutStore(store).get()
    assert r is not None and r.running  # admin-b waits for the lease
    t0 = time.monotonic()
    r = await drive_until_ended(fleet, second, store, errors=0)
    assert r.state is RolloutState.PROMOTED
    assert time.monotonic() - t0 < 0.5 + 1.0 + 1.0  # lease + bake + slack
    promotes = [e for e in await store.audit_entries() if e.action == "rollout_promote"]
    assert [e.actor for e in promotes] == ["guard:admin-b"]


async def test_a_rollout_is_driven_even_if_its_admin_dies_right_after_writing_it(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack, monkeypatch: Any
) -> None:
    """The admin that starts a rollout dies between writing it and putting the namespace in
    the drivers' index: another admin must still find it, and the guard end it."""
    import admin.rollout_routes
    from tests.admin.helpers import app_for, auth, client

    calls = []

    async def dies_after_the_write(store: Store) -> None:
        calls.append(store.namespace)
        if await RolloutStore(store).get() is not None:  # the rollout is written: die now
            raise RuntimeError("admin died")
        await activate(store)

    monkeypatch.setattr(admin.rollout_routes, "activate", dies_after_the_write)
    store = make_store(redis_server.url, namespace)
    stack.push_async_callback(store.redis.aclose)
    await store.publish(body(0))
    fleet = Fleet(stack, redis_server.url, namespace)
    canary = await fleet.add("c1", tier="canary")
    await until(lambda: on(canary, 1), 5, "v1")
    http = await stack.enter_async_context(client(app_for(redis_server.url)))
    doc = {"providers": [], "models": [], "clients": [], "metadata": {"n": "2"}}
    with contextlib.suppress(RuntimeError):
        await http.post(
            f"/v1/namespaces/{namespace}/rollouts",
            json={"document": doc, "stages": [{"selector": "tier=canary", "bake_s": 0}],
                  "guard": {"min_requests": 1}},
            headers=auth("admin"),
        )  # fmt: skip
    r = await RolloutStore(store).get()
    assert r is not None and r.running and calls
    await until(lambda: on(canary, 2), 5, "canary on v2")
    fleet.serve("c1", 5)
    driver = Driver(store.redis, store_for=stores(stack, redis_server.url), tick_s=0.05)
    async with asyncio.timeout(5):
        while (r := await RolloutStore(store).get()) is not None and r.running:
            fleet.serve("c1", 5)
            await driver.tick()
            await asyncio.sleep(0.05)
    assert r is not None and r.state is RolloutState.PROMOTED


async def test_a_cancelled_driver_stops_even_when_redis_turns_the_cancel_into_an_error() -> None:
    """redis-py may turn a cancellation into a ConnectionError; a loop that catches it and
    goes on never ends, and the admin's shutdown waits on it forever."""
    import redis.asyncio as aioredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    class Swallows:
        async def smembers(self, key: str) -> set[bytes]:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                raise RedisConnectionError("Connection closed by server.") from None
            return set()

    redis: aioredis.Redis = Swallows()  # type: ignore[assignment]
    driver = Driver(redis, store_for=lambda ns: None, tick_s=0.01)  # type: ignore[arg-type,return-value]
    task = asyncio.create_task(driver.run())
    await asyncio.sleep(0.05)
    task.cancel()
    async with asyncio.timeout(2):
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.done()
