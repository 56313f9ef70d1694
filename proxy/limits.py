"""Fleet-wide rate limits without a Redis round trip on the request path.

`FleetLimits` keeps one `Allowance` per bucket (a limit's requests or tokens, for one
global / provider / key / model / address scope), outliving config versions, and one
background task that leases for them: it wakes when an allowance falls under half a
lease, gathers every allowance that wants tokens into one script call
(`configbus.counters.LeaseCaller`), and once a second also sends the heartbeat that counts
the live replicas and gives back what idle allowances hold.

Redis unreachable (a call fails or times out): every allowance admits from a local bucket
with 1/N of its limit (N: the live replicas last seen), `local` is true in status and
metrics, and the task tries Redis again every `RETRY_S`; when a call succeeds, exact
fleet-wide limits resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from configbus.counters import Lease, LeaseCaller, counter_key
from configbus.document import RateLimit
from configbus.errors import StoreError
from proxy.allowance import Allowance

log = logging.getLogger("proxy.limits")

SWEEP_S = 1.0  # heartbeat, idle give-backs, forgetting unused buckets
RETRY_S = 1.0  # between tries while Redis is unreachable
LIVE_TTL_S = 5.0  # a replica not heard from for this long is not counted live
FORGET_S = 300.0  # a per-address allowance unused (and holding nothing) this long is dropped
BATCH = 500  # buckets per script call
TOP_UP = 0.75  # a lease call also refills the allowances below this share of their lease


class FleetLimits:
    """The replica's allowances and the task that leases for them."""

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        replica_id: str,
        *,
        timeout_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.namespace = namespace
        self.caller = LeaseCaller(
            redis,
            live_key=counter_key("live", "replicas", namespace=namespace),
            replica_id=replica_id,
            live_ttl_s=LIVE_TTL_S,
            timeout_s=timeout_s,
        )
        self.clock = clock
        self.allowances: dict[str, Allowance] = {}
        self.live_replicas = 1
        # 0 in fleet mode; N (≥ 1) while limiting locally to 1/N.
        self.local_share = 0
        self.local_since: float | None = None
        self.lease_calls = 0
        self.lease_failures = 0
        # (kind, dimension, shadow) -> requests refused (or, shadow, that would have been)
        self.refusals: dict[tuple[str, str, bool], int] = {}
        self.on_refusal: Callable[[str, str, bool], None] | None = None
        self._wanted: list[Allowance] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._next_sweep = 0.0

    @property
    def local(self) -> bool:
        return self.local_share > 0

    # -- building (on each config version) ---------------------------------------------

    def allowances_for(self, kind: str, name: str, limit: RateLimit | None) -> list[Allowance]:
        """The allowances (requests, tokens) enforcing `limit` for `kind` `name`."""
        if limit is None:
            return []
        out = []
        for per_minute, tokens in ((limit.rpm, False), (limit.tpm, True)):
            if per_minute is not None:
                out.append(self._allowance(kind, name, limit, per_minute, tokens))
        return out

    def _allowance(
        self, kind: str, name: str, limit: RateLimit, per_minute: int, tokens: bool
    ) -> Allowance:
        # The Redis key names the scope as the old fixed windows did (`client`, not `key`).
        scope = "client" if kind == "key" else kind
        key = counter_key(scope + (".tokens" if tokens else ""), name, namespace=self.namespace)
        capacity = limit.capacity(per_minute, tokens=tokens)
        a = self.allowances.get(key)
        if a is None:
            a = self.allowances[key] = Allowance(
                key,
                kind,
                name,
                tokens=tokens,
                per_minute=per_minute,
                capacity=capacity,
                shadow=limit.shadow,
                wake=self._want,
                local=self._local_n,
                now=self.clock(),
            )
            if self.local_share:
                a.enter_local(self.local_share, self.clock())
        else:
            a.configure(per_minute=per_minute, capacity=capacity, shadow=limit.shadow)
        return a

    # -- the request path ------------------------------------------------------------

    def _local_n(self) -> int:
        return self.local_share

    def _want(self, a: Allowance) -> None:
        a.pending = True
        self._wanted.append(a)
        self._wake.set()

    def refused(self, a: Allowance) -> None:
        key = (a.kind, "tokens" if a.tokens else "requests", a.shadow)
        self.refusals[key] = self.refusals.get(key, 0) + 1
        if self.on_refusal is not None:
            self.on_refusal(*key)

    # -- the background task -----------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("fleet limits already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fleet-limits")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.caller.aclose()

    async def _run(self) -> None:
        while True:
            now = self.clock()
            delay = self._next_sweep - now
            if self.local:
                delay = min(delay, RETRY_S)
            for a in self._wanted:
                if a.dry and a.retry_at > now:
                    delay = min(delay, a.retry_at - now)
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            self._wake.clear()
            try:
                await self.step()
            except Exception:  # never let the lease task die: limits would freeze
                log.exception("fleet limits: lease step failed")
                await asyncio.sleep(RETRY_S)

    async def step(self) -> None:
        """One round: lease for the allowances that want it; sweep when it is time."""
        now = self.clock()
        sweep = now >= self._next_sweep
        if sweep:
            self._next_sweep = now + SWEEP_S
            for key, a in list(self.allowances.items()):
                if a.idle(now) and not a.pending:
                    self._want(a)
                elif (
                    a.kind == "ip"  # the one unbounded set; the others follow the document
                    and now - a.last_used > FORGET_S
                    and not a.pending
                    and a.balance == 0
                ):
                    del self.allowances[key]
        if self.local:
            if not sweep and now - (self.local_since or now) < RETRY_S:
                return
            await self._try_fleet(now)
            return
        ready: list[Allowance] = []
        later: list[Allowance] = []
        for a in self._wanted:
            (later if a.dry and a.retry_at > now else ready).append(a)
        self._wanted = later
        if ready:
            # One call for all: top up every allowance that spent a quarter of its lease, so
            # the buckets a request goes through are refilled together, not one call each.
            for a in self.allowances.values():
                if not a.pending and not a.dry and a.balance < a.lease * TOP_UP:
                    a.pending = True
                    ready.append(a)
        for a in ready:
            a.pending = False
        batch: list[tuple[Allowance, int]] = []
        for a in ready:
            want = a.want(now)
            if want or a.give_back:
                batch.append((a, want))
        if not batch and not sweep:
            return
        for i in range(0, max(1, len(batch)), BATCH):
            if not await self._lease(batch[i : i + BATCH]):
                return

    async def _lease(self, batch: list[tuple[Allowance, int]]) -> bool:
        leases = [
            Lease(a.key, want, a.give_back, a.rate_per_s / 1000.0, a.capacity) for a, want in batch
        ]
        for a, _ in batch:
            a.give_back = 0.0
        self.lease_calls += 1
        try:
            live, grants = await self.caller.lease(leases)
        except StoreError as exc:
            self.lease_failures += 1
            self._enter_local(exc)
            return False
        self.live_replicas = max(1, live)
        now = self.clock()
        for (a, want), g in zip(batch, grants, strict=True):
            a.granted(want, g.granted, g.left, g.wait_ms, now)
            if a.dry and not a.pending:
                self._want(a)  # ask again when the bucket has a token
        return True

    def _enter_local(self, exc: BaseException) -> None:
        if self.local:
            return
        n = max(1, self.live_replicas)
        log.warning(
            "fleet limits: Redis unreachable (%s); limiting locally to 1/%d of each limit", exc, n
        )
        now = self.clock()
        self.local_share = n
        self.local_since = now
        for a in self.allowances.values():
            a.enter_local(n, now)
        for a in self._wanted:
            a.pending = False
        self._wanted = []

    async def _try_fleet(self, now: float) -> None:
        self.local_since = now
        self.lease_calls += 1
        try:
            live, _ = await self.caller.lease([])
        except StoreError:
            self.lease_failures += 1
            return
        self.live_replicas = max(1, live)
        log.warning("fleet limits: Redis is back; exact fleet-wide limits resume")
        self.local_share = 0
        self.local_since = None
        for a in self.allowances.values():
            a.enter_fleet()

    def status(self) -> dict[str, object]:
        return {
            "mode": "local" if self.local else "fleet",
            "live_replicas": self.live_replicas,
            "local_share": f"1/{self.local_share}" if self.local else None,
            "buckets": len(self.allowances),
            "lease_calls": self.lease_calls,
            "lease_failures": self.lease_failures,
            "refused": {
                f"{kind}.{dim}": n for (kind, dim, shadow), n in self.refusals.items() if not shadow
            },
            "shadow_refused": {
                f"{kind}.{dim}": n for (kind, dim, shadow), n in self.refusals.items() if shadow
            },
        }
