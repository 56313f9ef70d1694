"""Rollouts in Redis with real watchers: who runs what, and every step taken once."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import pytest

from configbus.codec import decode_body
from configbus.document import Document
from configbus.errors import RolloutConflict, RolloutRunning
from configbus.rollout import Rollout, RolloutState, Selector, Stage
from configbus.rollout_store import RolloutStore
from configbus.store import Store
from configbus.watcher import Watcher
from tests.core.helpers import body, make_store
from tests.core.test_watcher import publisher, settings, stack, until
from tests.support import RedisServer

__all__ = ["stack"]

CANARY = Stage(selector=Selector(labels={"tier": "canary"}), bake_s=0)


def new_rollout(*stages: Stage) -> Rollout:
    now = time.time()
    return Rollout(
        id=f"ro-{now}", version=0, sha256="", epoch="", base=0, stages=stages or (CANARY,),
        started_at=now, stage_started_at=now,
    )  # fmt: skip


async def watcher(
    stack: AsyncExitStack, url: str, ns: str, rid: str, **labels: str
) -> Watcher[Document, Document]:
    store = make_store(url, ns)
    stack.push_async_callback(store.redis.aclose)
    w: Watcher[Document, Document] = Watcher(
        store, decode=decode_body, settings=settings(ns, url, replica_id=rid), labels=labels
    )
    await stack.enter_async_context(w)
    return w


def on(w: Watcher[Any, Any], version: int) -> bool:
    return w.current is not None and w.current.version == version


async def started(store: Store, *stages: Stage, n: int = 1) -> Rollout:
    await store.publish(body(n), rollout=new_rollout(*stages), author="ann", message="canary")
    rollout = await RolloutStore(store).get()
    assert rollout is not None
    return rollout


async def test_canary_runs_the_version_head_stays_and_abort_brings_it_back(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    url = redis_server.url
    pub = await publisher(stack, url, namespace)
    await pub.publish(body(0))
    canary = await watcher(stack, url, namespace, "c1", tier="canary", zone="eu")
    stable = await watcher(stack, url, namespace, "s1", tier="stable")
    await until(lambda: on(canary, 1) and on(stable, 1), 5, "both on v1")
    stable_applied: list[int] = []
    stable.add_listener(lambda new, old: stable_applied.append(new.version))

    rollout = await started(pub, CANARY)
    assert (rollout.version, rollout.base, rollout.state) == (2, 1, RolloutState.RUNNING)
    assert (await pub.head()).version == 1
    await until(lambda: on(canary, 2), 2, "canary on the rollout's version")
    assert canary.current is not None and canary.current.staged
    assert canary.status().staged and canary.status().labels == {"tier": "canary", "zone": "eu"}

    # A plain publish and a second rollout wait for this one.
    with pytest.raises(RolloutRunning, match="is running"):
        await pub.publish(body(5))
    with pytest.raises(RolloutRunning):
        await pub.publish(body(6), rollout=new_rollout())

    # A canary that starts now (a restart) comes up on the version its labels select.
    late = await watcher(stack, url, namespace, "c2", tier="canary")
    await until(lambda: on(late, 2), 5, "restarted canary on v2")

    rs = RolloutStore(pub)
    aborted = Rollout(**{**_fields(rollout), "state": RolloutState.ABORTED, "reason": "bad"})
    t0 = time.monotonic()
    assert await rs.step("abort", aborted, expected_stage=0) == "aborted"
    await until(lambda: on(canary, 1) and on(late, 1), 2, "canaries back on head")
    assert time.monotonic() - t0 < 1.0
    assert on(stable, 1) and stable_applied == []  # never ran v2
    stored = await rs.get()
    assert stored is not None and stored.state is RolloutState.ABORTED and stored.reason == "bad"
    assert 2 in [m.version for m in await pub.versions()]  # the aborted version stays
    # The namespace is free again.
    assert (await pub.publish(body(7))).version == 3


async def test_promote_moves_head_once_whoever_asks(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    url = redis_server.url
    pub = await publisher(stack, url, namespace)
    await pub.publish(body(0))
    canary = await watcher(stack, url, namespace, "c1", tier="canary")
    stable = await watcher(stack, url, namespace, "s1")
    await until(lambda: on(canary, 1) and on(stable, 1), 5, "both on v1")  # first syncs done
    rollout = await started(pub, CANARY)
    await until(lambda: on(canary, 2), 5, "canary on v2")
    assert on(stable, 1)

    rs = RolloutStore(pub)
    done = Rollout(**{**_fields(rollout), "state": RolloutState.PROMOTED})
    results = await asyncio.gather(
        *(rs.step("promote", done, expected_stage=0) for _ in range(5)), return_exceptions=True
    )
    assert results.count("promoted") == 1
    assert all(isinstance(r, RolloutConflict) for r in results if r != "promoted")
    assert (await pub.head()).version == 2
    await until(lambda: on(stable, 2), 2, "stable on the promoted head")
    await until(lambda: canary.current is not None and not canary.current.staged, 5, "unstaged")
    assert canary.current is not None and canary.current.version == 2


async def test_a_stage_widens_to_its_share_members(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    url = redis_server.url
    pub = await publisher(stack, url, namespace)
    await pub.publish(body(0))
    ws = [await watcher(stack, url, namespace, f"r{i}") for i in range(4)]
    await until(lambda: all(on(w, 1) for w in ws), 5, "all on v1")
    synced = [w.sync_count for w in ws]
    share = Stage(selector=Selector(share=50), bake_s=0)
    rollout = await started(pub, CANARY, share)
    # Every watcher looks at the rollout (its hint) and stays: none carries tier=canary.
    await until(lambda: all(w.sync_count > n for w, n in zip(ws, synced, strict=True)), 5, "sync")
    assert all(on(w, 1) for w in ws)
    nxt = Rollout(**{**_fields(rollout), "stage": 1, "members": ("r1", "r3")})
    assert await RolloutStore(pub).step("advance", nxt, expected_stage=0) == "running"
    await until(lambda: on(ws[1], 2) and on(ws[3], 2), 2, "members on v2")
    assert on(ws[0], 1) and on(ws[2], 1)
    with pytest.raises(RolloutConflict, match="at stage 1, not 0"):
        await RolloutStore(pub).step("advance", nxt, expected_stage=0)


async def test_a_rejected_rollout_version_is_forgotten_once_aborted(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    url = redis_server.url
    pub = await publisher(stack, url, namespace)
    await pub.publish(body(0))
    canary = await watcher(stack, url, namespace, "c1", tier="canary")
    await until(lambda: on(canary, 1), 5, "v1")
    await pub.publish(b'{"providers": 1}', rollout=new_rollout())
    rollout = await RolloutStore(pub).get()
    assert rollout is not None
    await until(lambda: canary.status().rejected_version == 2, 5, "NACK of v2")
    assert on(canary, 1)
    aborted = Rollout(**{**_fields(rollout), "state": RolloutState.ABORTED})
    await RolloutStore(pub).step("abort", aborted, expected_stage=0)
    await until(lambda: canary.status().state == "applied", 5, "applied again")
    assert on(canary, 1) and canary.status().rejected_version is None


async def test_one_lease_holder_at_a_time(redis_server: RedisServer, namespace: str) -> None:
    store = make_store(redis_server.url, namespace)
    try:
        rs = RolloutStore(store)
        assert await rs.lease("admin-a", 0.3)
        assert not await rs.lease("admin-b", 0.3)
        assert await rs.lease("admin-a", 0.3)  # renewal

        async def b_gets_it() -> None:
            while not await rs.lease("admin-b", 0.3):  # noqa: ASYNC110 - polling Redis
                await asyncio.sleep(0.05)

        async with asyncio.timeout(2):
            await b_gets_it()
    finally:
        await store.redis.aclose()


def _fields(r: Rollout) -> dict[str, Any]:
    return {f: getattr(r, f) for f in r.__struct_fields__}
