"""What the soak watches: every observation in one ledger, and the watchers that fill it.

The ledger is what the report judges. The watchers poll each replica's /status (~10x/s:
never moving backwards, never running a rejected version, never going back to an epoch it
left), read the store's history every second (every version any store ever listed), and
measure convergence: every live replica on head, then the admin's rollout view saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from time import monotonic as now
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.chaos.processes import KEYS, NAMESPACE, Fleet, Replica

BACK_ON_HEAD_S = 2.0  # the promise: every replica on head within this of Redis returning
CONVERGE_TIMEOUT_S = 10.0

Version = tuple[str, int]  # (epoch, version)


@dataclass
class Staged:
    """A rollout's version, the replicas of its stage, and how it ended (the admin's clock)."""

    stage: set[str]
    state: str = "running"
    ended_at: float | None = None


@dataclass
class Ledger:
    t0: float = field(default_factory=now)
    requests: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    failure_samples: list[dict[str, Any]] = field(default_factory=list)
    fallback_answers: int = 0
    created: dict[Version, str] = field(default_factory=dict)  # -> idempotency key
    created_at: dict[Version, float] = field(default_factory=dict)
    doubled: list[dict[str, Any]] = field(default_factory=list)
    publish_outcomes: Counter[str] = field(default_factory=Counter)
    slowest_503_s: float = 0.0
    injected: dict[Version, str] = field(default_factory=dict)  # -> kind of bad record
    wiped_epochs: set[str] = field(default_factory=set)
    history: dict[Version, str] = field(default_factory=dict)  # -> message
    history_min: dict[str, int] = field(default_factory=dict)
    acks: dict[Version, set[str]] = field(default_factory=lambda: defaultdict(set))
    violations: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0
    rollouts: dict[Version, Staged] = field(default_factory=dict)
    # Each version a replica was seen to apply: (replica, version, its applied_at, wall clock).
    moves: list[tuple[str, Version, float | None]] = field(default_factory=list)
    # Replicas seen limiting locally (Redis out of reach), and the most at once.
    limits_local: set[str] = field(default_factory=set)
    # Answers on a rollout's version from a replica outside its stage: (replica, version, when).
    outside_answers: list[tuple[str, Version, float]] = field(default_factory=list)
    # Replicas running a rollout meant to fail (a canary on a broken provider): their upstream
    # failures are the guard's evidence, counted apart from `failed`.
    trial: set[str] = field(default_factory=set)

    def t(self) -> float:
        """Seconds since the soak started, for the log."""
        return round(now() - self.t0, 2)

    def fail(self, cause: str, rep: Replica, status: int, detail: str) -> None:
        if cause == "upstream" and rep.rid in self.trial:
            self.requests["failed_in_trial"] += 1
            return
        self.requests["failed"] += 1
        self.failed[cause] += 1
        if sum(1 for f in self.failure_samples if f["cause"] == cause) < 5:
            self.failure_samples.append(
                {"t": self.t(), "replica": rep.rid, "cause": cause, "status": status,
                 "detail": detail[:300]}
            )  # fmt: skip

    def observe(self, rep: Replica, st: dict[str, Any]) -> None:
        """One /status answer of `rep`, checked against what it answered before."""
        if st.get("version") is None:
            self.violations.append({"what": "no_config", "replica": rep.rid})
            return
        self.polls += 1
        if st.get("rate_limits_local"):
            self.limits_local.add(rep.rid)
        ev = (st["epoch"], int(st["version"]))
        t = self.t()
        if ev in self.injected:
            self.violations.append(
                {"what": "ran_rejected_version", "replica": rep.rid, "version": ev[1], "t": t}
            )
        last = rep.last
        if last != ev:
            self.moves.append((rep.rid, ev, st.get("applied_at")))
        if last is not None and last != ev:
            staged = self.rollouts.get(last)
            # An aborted rollout's stage goes back to head, which is older: no regression.
            aborting = staged is not None and staged.state != "promoted"
            if last[0] == ev[0] and ev[1] < last[1] and not aborting:
                self.violations.append(
                    {"what": "moved_backwards", "replica": rep.rid, "from": last[1],
                     "to": ev[1], "t": t}
                )  # fmt: skip
            elif last[0] != ev[0]:
                if ev[0] in rep.left_epochs:
                    self.violations.append(
                        {"what": "returned_to_old_epoch", "replica": rep.rid, "t": t}
                    )
                rep.left_epochs.add(last[0])
        rep.last = ev
        self.acks[ev].add(rep.rid)

    def answered(self, rep: Replica, version: int, at: float) -> None:
        """An answer of `rep` on `version` (its header), received at `at` (wall clock)."""
        if rep.last is None:
            return
        ev = (rep.last[0], version)
        staged = self.rollouts.get(ev)
        if staged is not None and rep.rid not in staged.stage:
            self.outside_answers.append((rep.rid, ev, at))

    def outside_stage(self) -> list[dict[str, Any]]:
        """Replicas outside a rollout's stage seen on its version before it was promoted (or
        at all, when it was not): each one breaks the promise of a staged publish."""
        out = []
        seen = [(rid, ev, at, "status") for rid, ev, at in self.moves]
        seen += [(rid, ev, at, "answer") for rid, ev, at in self.outside_answers]
        for rid, ev, at, how in seen:
            staged = self.rollouts.get(ev)
            if staged is None or rid in staged.stage:
                continue
            end = staged.ended_at if staged.state == "promoted" else None
            if end is None or at is None or at < end:
                out.append(
                    {"what": "ran_outside_stage", "replica": rid, "version": ev[1],
                     "seen_by": how, "at": at, "rollout_state": staged.state,
                     "ended_at": staged.ended_at}
                )  # fmt: skip
        return out


class Watch:
    """The pollers, the auditor and the convergence probe. `lock` is the publish lock: a
    convergence check holds it, so head stays still while it looks."""

    def __init__(self, fleet: Fleet, ledger: Ledger, lock: asyncio.Lock) -> None:
        self.fleet, self.ledger, self.lock = fleet, ledger, lock
        self.sre_view_s: float | None = None  # of the last converge()

    async def poll_status(self, rep: Replica, stopping: asyncio.Event) -> None:
        async with httpx.AsyncClient(timeout=1.0) as http:
            while not stopping.is_set():
                if not rep.down:
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        st = (await http.get(rep.url + "/status")).json()
                        if not rep.down:
                            self.ledger.observe(rep, st)
                await asyncio.sleep(0.1)

    async def auditor(self, stopping: asyncio.Event) -> None:
        """Reads history every second: every version any store ever listed, with its message."""
        while not stopping.is_set():
            with contextlib.suppress(aioredis.RedisError, OSError):
                await self.read_history()
            await asyncio.sleep(1.0)

    async def read_history(self) -> None:
        if self.fleet.redis_down():
            return
        r, ledger = self.fleet.r, self.ledger
        nums = [int(x) for x in await r.zrange(KEYS + "history", 0, -1)]
        epoch_raw = await r.get(KEYS + "epoch")
        if not nums or epoch_raw is None:
            return
        epoch = epoch_raw.decode()
        ledger.history_min[epoch] = min(ledger.history_min.get(epoch, nums[0]), nums[0])
        for v in nums:
            if (epoch, v) in ledger.history:
                continue
            rec_epoch, message = await r.hmget(KEYS + f"v:{v}", ["epoch", "message"])
            if rec_epoch is None:
                continue
            ledger.history[(rec_epoch.decode(), v)] = (message or b"").decode()

    async def converge(self, since: float, timeout_s: float = CONVERGE_TIMEOUT_S) -> float | None:
        """Seconds from `since` until every live replica runs head (not stale); None if never.
        Holds the publish lock, so head stays still while it looks."""
        async with self.lock:
            took = await self.converged(since, timeout_s)
            self.sre_view_s = None if took is None else await self._sre_view()
            return took

    async def _sre_view(self, timeout_s: float = 3.0) -> float | None:
        """Once every replica runs head, seconds until the admin's rollout status says so too
        (every replica alive, on head, none rejected): what an SRE sees must not lag behind."""
        started = now()
        path = f"/v1/namespaces/{NAMESPACE}/replicas"
        while now() - started < timeout_s:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                summary = (await self.fleet.admin_http[0].get(path)).json()["summary"]
                if (
                    summary["all_on_head"]
                    and summary["alive"] == len(self.fleet.replicas)
                    and summary["rejected"] == 0
                ):
                    return round(now() - started, 3)
            await asyncio.sleep(0.05)
        return None

    async def converged(self, since: float, timeout_s: float) -> float | None:
        """As `converge`, for a caller that already holds the lock."""
        deadline = now() + timeout_s
        async with httpx.AsyncClient(timeout=1.0) as http:
            while now() < deadline:
                with contextlib.suppress(aioredis.RedisError, OSError, httpx.HTTPError):
                    epoch, version = await self.fleet.head()
                    live = [r for r in self.fleet.replicas if not r.down]
                    sts = [(await http.get(r.url + "/status")).json() for r in live]
                    if all(
                        (s["epoch"], s["version"], s["stale"]) == (epoch, version, False)
                        for s in sts
                    ):
                        return round(now() - since, 3)
                await asyncio.sleep(0.02)
        return None
