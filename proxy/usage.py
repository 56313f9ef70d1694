"""Usage, cost and budgets on a replica: counted in memory, flushed in the background.

The request path adds to a dict (`Meter.count`) and checks budgets with a dict lookup
(`Meter.over` is empty unless some key or team is over budget): no Redis. A task flushes
what was counted at least every `flush_s` seconds in one script call
(`configbus.usage.UsageWriter`): per-minute buckets of requests, tokens and cost per (key,
team, model, provider), and the spend of every key and team that has a budget. The same
call answers each charged counter's total and, when it changed, the fleet's list of
counters over their limit; so every replica refuses a key over budget (429
`budget_exceeded`) from its next flush on. A replica also stops a key by itself once the
total it last heard plus what it spent since crosses the limit.

Near a limit the replicas that spend on it flush `NEAR_SPEEDUP` times as often: once a
flush answers a total within two flush-steps of the fleet's spend below a limit, until it
is crossed. So the crossing reaches Redis, and every replica spending on that key or team,
within a tenth of the interval each (a replica not spending on it hears at its next
regular flush, and has nothing to refuse meanwhile).

Overshoot: spend beyond a budget is at most the cost of the requests in flight when it
was crossed (admitted before, answered after: their spend is always counted) plus what the
fleet admits while the crossing travels: up to one flush interval for the spend to reach
Redis (none when this replica sees the crossing itself: it flushes at once) and one more
for every other replica to hear of it, each a tenth of that when the approach was seen.
So at most: cost per request x (in flight + fleet rate x 2 x `flush_s`).

Redis down: counts stay in memory (at most `MAX_PENDING` minute-series cells; past that,
older minutes fold into the newest, totals kept) and go out with the first flush that
succeeds; budgets are then enforced on what this replica knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from configbus.document import Budget
from configbus.errors import StoreError
from configbus.usage import (
    MICRO,
    SEP,
    Batch,
    Charge,
    FlushResult,
    Over,
    Series,
    UsageWriter,
    period_end,
    period_id,
    usd_to_micro,
)
from proxy import errors
from proxy.errors import ProxyError

if TYPE_CHECKING:
    from proxy.metrics import ProxyMetrics
    from proxy.routing import Target
    from proxy.runtime import ClientRuntime, Runtime
    from proxy.upstream import ProviderRuntime

log = logging.getLogger("proxy.usage")

DEFAULT_FLUSH_S = 1.0
CACHE_PROVIDER = "cache"  # the `provider` of requests the response cache answered
NEAR_SPEEDUP = 10  # near a budget's limit, flush this many times as often
MAX_PENDING = 100_000  # minute x series cells kept while Redis is unreachable

Cell = list[int]  # requests, prompt tokens, completion tokens, pico-USD


class Meter:
    """The replica's usage counts, budget state and the task that flushes them."""

    def __init__(
        self,
        writer: UsageWriter,
        *,
        flush_s: float = DEFAULT_FLUSH_S,
        clock: Callable[[], float] = time.time,
        metrics: ProxyMetrics | None = None,
    ) -> None:
        self.writer = writer
        self.flush_s = flush_s
        self.clock = clock
        self.metrics = metrics
        # Counted since the last swap: series → cell; the minute it belongs to.
        self._cells: dict[Series, Cell] = {}
        self._minute = int(clock()) // 60
        # Swapped out, not yet in Redis: (minute, series) → cell.
        self._pending: dict[tuple[int, Series], Cell] = {}
        self._carry: dict[Series, int] = {}  # pico-USD under a micro-dollar, per series
        # Budgets: (scope, name) → [pico-USD not yet flushed, the budget]
        self._spend: dict[tuple[str, str], list[Any]] = {}
        self._spend_carry: dict[tuple[str, str], int] = {}
        # (scope, name) → (period id, micro-USD total) as the last flush answered
        self._known: dict[tuple[str, str], tuple[str, int]] = {}
        # Over budget: (scope, name) → (period id, micro-USD total) from the fleet's list
        # and from this replica's own count. Empty unless some key or team is over.
        self.over: dict[tuple[str, str], tuple[str, int]] = {}
        self._fleet_over: dict[tuple[str, str], tuple[str, int]] = {}
        self._rev = ""
        # The batch sent and not yet confirmed (its answer may have been lost), and the
        # spend it carries: still counted by the local budget check.
        self._unsent: tuple[Batch, list[tuple[str, str]]] | None = None
        self._inflight: dict[tuple[str, str], int] = {}
        self._periods = self._period_ids(clock())
        self.flushes = 0
        self.flush_failures = 0
        self.folded = 0
        self.last_flush_at: float | None = None
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._near_until = 0.0  # flushing faster until then: a budget is about to be crossed
        self._known_at: dict[tuple[str, str], float] = {}  # when each `_known` total came

    # -- the request path ------------------------------------------------------------------

    def refusal(self, client: ClientRuntime, rt: Runtime) -> ProxyError | None:
        """The 429 for a client whose key or team is over budget (call only when `over`)."""
        who = client.key_id or client.name
        hit = self.over.get(("key", who))
        if hit is not None and client.budget is not None and self._exceeds(hit, client.budget):
            return budget_exceeded("key", who, client.budget, self.clock())
        if client.team is not None:
            hit = self.over.get(("team", client.team))
            budget = rt.team_budgets.get(client.team)
            if hit is not None and budget is not None and self._exceeds(hit, budget):
                return budget_exceeded("team", client.team, budget, self.clock())
        return None

    def _exceeds(self, hit: tuple[str, int], budget: Budget) -> bool:
        # The limit of the config in force (it may have been raised since), this period.
        return hit[0] == self._periods[budget.period] and hit[1] >= usd_to_micro(budget.limit_usd)

    def count(
        self,
        rt: Runtime,
        client: ClientRuntime,
        model: str,
        target: Target[ProviderRuntime],
        prompt: int,
        completion: int,
    ) -> None:
        """One answered request and the tokens its upstream reported."""
        who = client.key_id or client.name
        cell = self._cell((who, client.team or "", model, target.provider.name))
        cost = prompt * target.price_in + completion * target.price_out
        cell[0] += 1
        cell[1] += prompt
        cell[2] += completion
        if cost:
            cell[3] += cost
            if client.budget is not None:
                self._charge(("key", who), client.budget, cost)
            if client.team is not None:
                budget = rt.team_budgets.get(client.team)
                if budget is not None:
                    self._charge(("team", client.team), budget, cost)

    def count_cache_hit(
        self, client: ClientRuntime, model: str, prompt: int, completion: int
    ) -> None:
        """One request the response cache answered: counted under the provider `cache`,
        with the tokens the stored answer reports and no cost (no upstream was paid)."""
        cell = self._cell((client.key_id or client.name, client.team or "", model, CACHE_PROVIDER))
        cell[0] += 1
        cell[1] += prompt
        cell[2] += completion

    def _cell(self, series: Series) -> Cell:
        cell = self._cells.get(series)
        if cell is None:
            cell = self._cells[series] = [0, 0, 0, 0]
        return cell

    def _charge(self, scope: tuple[str, str], budget: Budget, pico: int) -> None:
        s = self._spend.get(scope)
        if s is None:
            s = self._spend[scope] = [0, budget]
        s[0] += pico
        s[1] = budget
        # Stop the key here once what the fleet had plus what we spent since crosses it.
        pid = self._periods[budget.period]
        known = self._known.get(scope)
        if known is None and scope not in self._known_at:
            self._wake.set()  # a budget not heard of yet: learn where the fleet stands now
        total = (known[1] if known is not None and known[0] == pid else 0) * MICRO + s[0]
        total += self._spend_carry.get(scope, 0) + self._inflight.get(scope, 0) * MICRO
        if total >= usd_to_micro(budget.limit_usd) * MICRO:
            hit = self.over.get(scope)
            if hit is None or not self._exceeds(hit, budget):
                self.over[scope] = (pid, total // MICRO)
                self._wake.set()  # tell the fleet now, not at the next tick

    def tally(
        self,
        rt: Runtime,
        client: ClientRuntime,
        model: str,
        target: Target[ProviderRuntime],
    ) -> Tally:
        return Tally(self, rt, client, model, target)

    # -- the background side ---------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("usage meter already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-flush")

    async def aclose(self) -> None:
        """Stop the task, with a last flush of what was counted."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            with contextlib.suppress(Exception):
                await self.flush()
        await self.writer.aclose()

    async def _run(self) -> None:
        while True:
            now = self.clock()
            # Wake at the flush interval (faster near a budget), and at each minute's start
            # (cells go by minute).
            every = self.flush_s / NEAR_SPEEDUP if now < self._near_until else self.flush_s
            delay = min(every, (self._minute + 1) * 60 - now + 0.001)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, delay)):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:  # never let the task die: usage would pile up unflushed
                log.exception("usage: flush failed")

    def _period_ids(self, now: float) -> dict[str, str]:
        return {p: period_id(p, now) for p in ("day", "month", "total")}

    def _swap(self, now: float) -> None:
        cells, self._cells = self._cells, {}
        minute, self._minute = self._minute, int(now) // 60
        if not cells:
            return
        if self.metrics is not None:
            self.metrics.usage(cells)
        pending = self._pending
        for series, c in cells.items():
            key = (minute, series)
            p = pending.get(key)
            if p is None:
                pending[key] = c
            else:
                for i in range(4):
                    p[i] += c[i]
        if len(pending) > MAX_PENDING:
            self._fold()

    def _fold(self) -> None:
        """Too much unflushed (Redis down long): keep totals, lose minute precision."""
        newest = max(m for m, _ in self._pending)
        folded: dict[tuple[int, Series], Cell] = {}
        for (_, series), c in self._pending.items():
            f = folded.get((newest, series))
            if f is None:
                folded[(newest, series)] = list(c)
            else:
                for i in range(4):
                    f[i] += c[i]
        self.folded += len(self._pending) - len(folded)
        self._pending = folded
        log.warning("usage: Redis unreachable; older minutes folded into minute %d", newest)

    async def flush(self) -> bool:
        """Send what was counted; False when Redis could not take it (kept for next time)."""
        now = self.clock()
        periods = self._period_ids(now)
        if periods != self._periods:
            self._periods = periods
            self._known = {k: v for k, v in self._known.items() if v[0] in periods.values()}
        self._swap(now)
        # A batch whose answer was lost goes again first, as it was (counted once).
        if self._unsent is not None and not await self._send(*self._unsent):
            return False
        return await self._send(*self._build(now))

    def _build(self, now: float) -> tuple[Batch, list[tuple[str, str]]]:
        """A batch of everything counted: from here it holds the counts until Redis has them."""
        buckets: dict[int, dict[Series, list[int]]] = {}
        carry = self._carry
        for (minute, series), c in self._pending.items():
            pico = c[3] + carry.get(series, 0)
            carry[series] = pico % MICRO
            buckets.setdefault(minute, {})[series] = [c[0], c[1], c[2], pico // MICRO]
        self._pending = {}
        self._carry = {k: v for k, v in carry.items() if v}
        charges: list[Charge] = []
        scopes: list[tuple[str, str]] = []
        for scope, (pico, budget) in self._spend.items():
            pico += self._spend_carry.pop(scope, 0)
            if pico % MICRO:
                self._spend_carry[scope] = pico % MICRO
            limit = usd_to_micro(budget.limit_usd)
            charges.append(Charge(scope[0], scope[1], budget.period, pico // MICRO, limit))
            scopes.append(scope)
        self._spend = {}
        self._inflight = {scope: c.micro_usd for scope, c in zip(scopes, charges, strict=True)}
        batch = self.writer.batch(buckets, charges, now)
        self._unsent = (batch, scopes)
        return batch, scopes

    async def _send(self, batch: Batch, scopes: list[tuple[str, str]]) -> bool:
        try:
            res = await self.writer.send(batch, self._rev)
        except StoreError as exc:
            self.flush_failures += 1
            if not self._failing:
                log.warning("usage: flush failed (%s); counting locally until Redis is back", exc)
            self._failing = True
            return False
        if self._failing:
            log.warning("usage: Redis is back; counts flushed")
        self._failing = False
        self.flushes += 1
        self.last_flush_at = batch.now
        self._unsent = None
        self._inflight = {}
        self._learn(res, scopes, batch.charges, batch.now)
        return True

    def _learn(
        self, res: FlushResult, scopes: list[tuple[str, str]], charges: list[Charge], now: float
    ) -> None:
        for scope, c, total in zip(scopes, charges, res.totals, strict=True):
            pid = period_id(c.period, now)
            before, at = self._known.get(scope), self._known_at.get(scope, now)
            if total < c.limit_micro_usd:
                # The fleet's spend rate on it, from the last two totals we heard: when the
                # budget left would go within two intervals, flush faster until it is
                # crossed, so the crossing reaches Redis, and the others, well within one
                # interval of it. A budget we just met gets fast flushes until the rate is
                # known (a tiny one may be spent in under an interval).
                if before is None or before[0] != pid or now - at < 1e-3:
                    self._near_until = max(self._near_until, now + self.flush_s)
                else:
                    per_s = (total - before[1]) / (now - at)
                    if c.limit_micro_usd - total <= per_s * 2 * self.flush_s:
                        self._near_until = now + 2 * self.flush_s
            self._known[scope] = (pid, total)
            self._known_at[scope] = now
        if res.over is not None:
            self._rev = res.rev
            self._fleet_over = _parse_over(res.over, now)
        over = dict(self._fleet_over)
        # What this replica's own counts say (spent since this flush included).
        for scope, s in self._spend.items():
            known = self._known.get(scope)
            budget: Budget = s[1]
            if (
                known is not None
                and known[0] == self._periods[budget.period]
                and known[1] * MICRO + s[0] >= usd_to_micro(budget.limit_usd) * MICRO
            ):
                over[scope] = (known[0], known[1] + s[0] // MICRO)
        for scope, charge, total in zip(scopes, charges, res.totals, strict=True):
            if total >= charge.limit_micro_usd:
                over[scope] = (period_id(charge.period, now), total)
        self.over = over

    @property
    def pending_cells(self) -> int:
        return len(self._pending) + len(self._cells)

    def status(self) -> dict[str, object]:
        return {
            "flush_s": self.flush_s,
            "flushes": self.flushes,
            "flush_failures": self.flush_failures,
            "failing": self._failing,
            "pending_cells": self.pending_cells,
            "folded_cells": self.folded,
            "over_budget": len(self.over),
            "over_budget_first": sorted(f"{s}:{n}" for s, n in self.over)[:20],
        }


class Tally:
    """A streamed answer's usage, counted when the stream ends."""

    __slots__ = ("client", "meter", "model", "rt", "target")

    def __init__(
        self,
        meter: Meter,
        rt: Runtime,
        client: ClientRuntime,
        model: str,
        target: Target[ProviderRuntime],
    ) -> None:
        self.meter = meter
        self.rt = rt
        self.client = client
        self.model = model
        self.target = target

    def done(self, prompt: int, completion: int) -> None:
        self.meter.count(self.rt, self.client, self.model, self.target, prompt, completion)


def _parse_over(over: dict[str, Over], now: float) -> dict[tuple[str, str], tuple[str, int]]:
    out: dict[tuple[str, str], tuple[str, int]] = {}
    for m, o in over.items():
        parts = m.split(SEP)
        if len(parts) != 3 or (o.ends and o.ends <= now):
            continue
        out[(parts[0], parts[1])] = (parts[2], o.total_micro_usd)
    return out


_WHAT = {"day": "per UTC day", "month": "per UTC month", "total": "in total"}


def budget_exceeded(scope: str, name: str, budget: Budget, now: float) -> ProxyError:
    headers = None
    ends = period_end(budget.period, now)
    if ends:
        headers = {"retry-after": str(max(1, ends - int(now)))}
    return errors.budget_exceeded(
        f"budget of {scope} '{name}' exceeded: ${budget.limit_usd:g} {_WHAT[budget.period]}",
        scope,
        headers,
    )
