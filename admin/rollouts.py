"""Driving rollouts: judge each running stage from the replicas' heartbeats, then advance,
promote or abort it, from whichever admin holds the namespace's lease.

Every admin runs a driver. Each tick it looks at the namespaces with a running rollout
(a small index in Redis, so an admin that never served the namespace still finds it), takes
or extends the lease, and acts only while it holds it. Each step is one checked script
(`RolloutStore.step`): an admin that lost its lease, or judged a stage that moved on, is
refused, so a rollout is never promoted twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable

import msgspec
import redis.asyncio as aioredis
from opentelemetry.trace import Tracer

from admin.tracing import step_span
from configbus.errors import RolloutConflict, StoreError
from configbus.records import ReplicaInfo, ReplicaStatus
from configbus.redis_calls import guarded
from configbus.rollout import (
    Assessment,
    Rollout,
    RolloutState,
    Traffic,
    add,
    judge,
    share_members,
)
from configbus.rollout_store import Baseline, RolloutStore, Step
from configbus.store import Store

log = logging.getLogger("admin.rollouts")

# A global index (no hash tag: it spans namespaces) of namespaces with a running rollout.
ACTIVE_INDEX = "cb:rollouts:active"
DEFAULT_TICK_S = 0.25
DEFAULT_LEASE_S = 5.0


async def activate(store: Store) -> None:
    """Put the namespace in the index drivers scan (after its rollout started)."""
    await guarded(store.redis.sadd(ACTIVE_INDEX, store.namespace), "rollout index")


def snapshot(replicas: Iterable[ReplicaInfo]) -> Baseline:
    """Every live replica's traffic counts now: a stage's zero point."""
    return {r.status.replica_id: dict(r.status.traffic) for r in replicas if r.alive}


def assess(r: Rollout, replicas: list[ReplicaInfo], zero: Baseline, now: float) -> Assessment:
    label = f"stage {r.stage + 1}"
    live = [i.status for i in replicas if i.alive]
    for st in live:
        if st.rejected_version == r.version and st.epoch in (r.epoch, None):
            reason = f"{label}: replica {st.replica_id} rejected version {r.version}: {st.reason}"
            return Assessment(action="abort", reason=reason)
    stage = [s for s in live if s.version == r.version and s.epoch == r.epoch]
    base = [s for s in live if s.version == r.base and s.epoch == r.epoch and not s.staged]

    def since(statuses: list[ReplicaStatus], version: int) -> Traffic:
        key = str(version)
        return add(
            st.traffic[key].minus(zero.get(st.replica_id, {}).get(key))
            for st in statuses
            if key in st.traffic
        )

    verdict = judge(r.guard, since(stage, r.version), since(base, r.base), label=label)
    baked = now - r.stage_started_at
    bake = r.stages[r.stage].bake_s
    action, reason = verdict.decision, verdict.reason
    if action == "pass":
        if baked >= bake:
            action = "promote" if r.stage + 1 >= len(r.stages) else "advance"
        else:
            action, reason = "wait", f"{reason}; baking {baked:.0f}/{bake:g}s"
    return Assessment(
        action=action,
        reason=reason,
        verdict=verdict,
        stage_replicas=tuple(s.replica_id for s in stage),
        baseline_replicas=tuple(s.replica_id for s in base),
        baked_s=baked,
    )


def next_stage(r: Rollout, replicas: list[ReplicaInfo], now: float) -> Rollout:
    """The rollout at its next stage, with the replicas a share stage adds."""
    stage = r.stages[r.stage + 1]
    live = [i.status for i in replicas if i.alive]
    by_labels = [s.replica_id for s in live if r.selects(s.replica_id, s.labels)]
    return msgspec.structs.replace(
        r,
        stage=r.stage + 1,
        members=share_members(stage, [s.replica_id for s in live], r.members, by_labels=by_labels),
        stage_started_at=now,
    )


def ended(r: Rollout, state: RolloutState, reason: str, now: float) -> Rollout:
    return msgspec.structs.replace(r, state=state, reason=reason, ended_at=now)


async def end_by_hand(
    rs: RolloutStore,
    r: Rollout,
    state: RolloutState,
    *,
    actor: str,
    message: str = "",
    tracer: Tracer | None = None,
    traceparent: str | None = None,
) -> Rollout:
    """End a running rollout now, whatever its stage: a person's promote or abort, or the
    abort a rollback makes first. One checked step, so it never crosses the driver's;
    RolloutConflict when the rollout already ended. Answers the rollout as stored."""
    if not r.running:
        raise RolloutConflict(f"rollout {r.id} already ended ({r.state.value})")
    verb = "promoted" if state is RolloutState.PROMOTED else "aborted"
    reason = f"{verb} by {actor}" + (f": {message}" if message else "")
    done = ended(r, state, reason, time.time())
    step: Step = "promote" if state is RolloutState.PROMOTED else "abort"
    with step_span(tracer, rs.keys.namespace, done, step, actor, traceparent) as tp:
        await rs.step(step, done, expected_stage=None, traceparent=tp)
    return await rs.get() or done


class Driver:
    """One admin's rollout driver; `run()` until cancelled."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        store_for: Callable[[str], Store],
        on_step: Callable[[str, Rollout, str], None] | None = None,
        tick_s: float = DEFAULT_TICK_S,
        lease_s: float = DEFAULT_LEASE_S,
        holder: str | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._redis = redis
        self._tracer = tracer
        self._store_for = store_for
        self._on_step = on_step
        self.tick_s = tick_s
        self.lease_s = lease_s
        self.holder = holder or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"

    @property
    def _actor(self) -> str:
        return f"guard:{self.holder}"

    async def run(self) -> None:
        """Tick until cancelled."""
        failing = False  # log a Redis outage once, not on every tick
        task = asyncio.current_task()
        while True:
            try:
                await self.tick()
                if failing:
                    log.info("rollout driver: Redis is back")
                failing = False
            except StoreError as exc:
                if not failing:
                    log.warning("rollout driver: %s", exc)
                failing = True
            except Exception:
                log.exception("rollout driver tick failed")
            if task is not None and task.cancelling():
                # redis-py can turn our cancellation into a ConnectionError (caught above):
                # without this the loop would go on and the admin's shutdown wait forever.
                raise asyncio.CancelledError
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        raw = await guarded(self._redis.smembers(ACTIVE_INDEX), "rollout index")
        for ns in sorted(x.decode() if isinstance(x, bytes) else x for x in raw):
            try:
                await self.drive(self._store_for(ns))
            except RolloutConflict as exc:
                log.info("rollout in %s moved on: %s", ns, exc)

    async def drive(self, store: Store) -> Assessment | None:
        """One look at one namespace's rollout; acts when this admin holds the lease."""
        rs = RolloutStore(store)
        r = await rs.get()
        if r is None or not r.running:
            await guarded(store.redis.srem(ACTIVE_INDEX, store.namespace), "rollout index")
            return None
        if not await rs.lease(self.holder, self.lease_s):
            return None
        now = time.time()
        replicas = await store.replicas()
        zero = await rs.load_baseline(r.id, r.stage)
        if zero is None:
            zero = snapshot(replicas)
            await rs.save_baseline(r.id, r.stage, zero)
        a = assess(r, replicas, zero, now)
        if a.action == "wait":
            return a
        if a.action == "advance":
            nxt = next_stage(r, replicas, now)
            with step_span(self._tracer, store.namespace, nxt, "advance", self._actor) as tp:
                await rs.step(
                    "advance", nxt, expected_stage=r.stage, holder=self.holder, traceparent=tp
                )
            await rs.save_baseline(r.id, nxt.stage, snapshot(replicas))
            await self._stepped(store, nxt, "advance", a.reason)
            return a
        state = RolloutState.PROMOTED if a.action == "promote" else RolloutState.ABORTED
        done = ended(r, state, a.reason, now)
        step: Step = "promote" if state is RolloutState.PROMOTED else "abort"
        with step_span(self._tracer, store.namespace, done, step, self._actor) as tp:
            await rs.step(step, done, expected_stage=r.stage, holder=self.holder, traceparent=tp)
        await self._stepped(store, done, step, a.reason)
        await guarded(store.redis.srem(ACTIVE_INDEX, store.namespace), "rollout index")
        return a

    async def _stepped(self, store: Store, r: Rollout, action: Step, reason: str) -> None:
        log.info("rollout %s in %s: %s (%s)", r.id, store.namespace, action, reason)
        if self._on_step is not None:
            self._on_step(store.namespace, r, action)
        await store.audit(
            f"rollout_{action}",
            self._actor,
            "ok",
            version=r.version,
            rollout=r.id,
            stage=r.stage + 1,
            message=reason,
        )
