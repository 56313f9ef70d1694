"""Usage, cost and spend per client key in Redis: what replicas flush, and how it is read.

Replicas count requests, prompt and completion tokens and cost per (key, team, model,
provider) in memory and flush them at least every second, one script call per flush
(`lua.USAGE_FLUSH`). Layout, under the namespace's hash tag:

    cb:{ns}:usage:m:<unix minute>   HASH  "<key>|<team>|<model>|<provider>|<r|p|c|u>" → count
    cb:{ns}:usage:d:<unix day>      HASH  the same fields, summed over the UTC day
    cb:{ns}:usage:spend:<scope>|<name>|<period>   micro-USD spent by a key or a team in
                                    a budget period (`d20261130`, `m202611`, `t`)
    cb:{ns}:usage:over              HASH  "<scope>|<name>|<period>" → "<total> <period end>"
                                    for every counter at or over its limit
    cb:{ns}:usage:over:rev          changes whenever `over` does
    cb:{ns}:usage:batch:<writer>    the last batch a replica's writer had applied (a
                                    retried batch whose first answer was lost counts once)

Fields: `r` requests, `p` prompt tokens, `c` completion tokens, `u` cost in integer
micro-dollars (no float drift: replicas count pico-dollars and carry the remainder). `team`
is empty for a key without one. Names never contain `|` (see `document.NAME_PATTERN`).
Minute buckets live `MINUTE_TTL_S`, day buckets `DAY_TTL_S`; a query sums the day buckets of
the whole UTC days in its range and the minute buckets of the rest. A query over time (a
`bucket` of minute or hour) sums minute buckets per UTC minute or hour, one of day sums the
day buckets; its range widens to whole buckets.
"""

from __future__ import annotations

import calendar
import itertools
import secrets
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import redis.asyncio as aioredis

from configbus import lua
from configbus.api import (
    MAX_USAGE_BUCKETS,
    USAGE_BUCKETS,
    USAGE_DIMENSIONS,
    UsageBucket,
    UsageReport,
    UsageRow,
)
from configbus.counters import ScriptCaller
from configbus.names import check_namespace
from configbus.redis_calls import REDIS_ERRORS, store_error

SEP = "|"
MINUTE_TTL_S = 8 * 86_400
DAY_TTL_S = 400 * 86_400
BATCH_TTL_S = 86_400  # how long Redis remembers a writer's last batch number
MAX_RANGE_S = DAY_TTL_S
MICRO = 1_000_000  # pico-dollars per micro-dollar, and micro-dollars per dollar
METRICS = ("r", "p", "c", "u")  # requests, prompt tokens, completion tokens, micro-USD
BUCKET_S = {"minute": 60, "hour": 3600, "day": 86_400}

Series = tuple[str, str, str, str]
"""(key, team or '', public model, provider)"""


def usd_to_micro(usd: float) -> int:
    return round(usd * MICRO)


def pico_per_token(usd_per_million: float) -> int:
    """A price in USD per million tokens as integer pico-dollars per token (exact to 1e-6
    USD per million, so a request's cost is integer arithmetic)."""
    return round(usd_per_million * MICRO)


# -- budget periods (UTC) -----------------------------------------------------------------


def period_id(period: str, now: float) -> str:
    """`d20261130`, `m202611` or `t`: which counter spend of `now` goes to."""
    if period == "total":
        return "t"
    t = time.gmtime(now)
    if period == "day":
        return f"d{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}"
    return f"m{t.tm_year:04d}{t.tm_mon:02d}"


def period_end(period: str, now: float) -> int:
    """Unix seconds when the period holding `now` ends (0: never)."""
    if period == "total":
        return 0
    if period == "day":
        return (int(now) // 86_400 + 1) * 86_400
    t = time.gmtime(now)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return calendar.timegm((year, month, 1, 0, 0, 0))


def member(scope: str, name: str, pid: str) -> str:
    """A spend counter's name in the over-budget hash: `key|key_ab12|d20261130`."""
    return f"{scope}{SEP}{name}{SEP}{pid}"


class UsageLayout:
    """The Redis names of one namespace's usage."""

    def __init__(self, namespace: str) -> None:
        check_namespace(namespace)
        self.prefix = p = f"cb:{{{namespace}}}:usage"
        self.over, self.over_rev = p + ":over", p + ":over:rev"

    def minute(self, m: int) -> str:
        return f"{self.prefix}:m:{m}"

    def day(self, d: int) -> str:
        return f"{self.prefix}:d:{d}"

    def spend(self, counter: str) -> str:
        return f"{self.prefix}:spend:{counter}"

    def batch(self, writer: str) -> str:
        return f"{self.prefix}:batch:{writer}"


# -- the flush -----------------------------------------------------------------------------


class Charge(NamedTuple):
    """Spend to add to a key's or a team's counter for the budget period in force."""

    scope: str  # key | team
    name: str
    period: str  # day | month | total
    micro_usd: int
    limit_micro_usd: int


class Over(NamedTuple):
    total_micro_usd: int
    ends: int  # unix seconds (0: never)


class FlushResult(NamedTuple):
    totals: list[int]  # each charge's counter after it, in order
    rev: str  # the over-budget hash's revision
    over: dict[str, Over] | None  # the hash (member → Over), when `rev` is new to the caller


class Batch(NamedTuple):
    """One flush, built once: a retry sends the same counts under the same number."""

    number: int  # 0: nothing to count (the call only asks for the over-budget list)
    keys: list[Any]
    args: list[Any]  # after the header
    charges: list[Charge]
    now: float


class UsageWriter:
    """Flushes a replica's counts: one script call, on a dedicated connection with a
    timeout (`ScriptCaller`), so a slow Redis fails the flush instead of holding it.

    A call that timed out may still have run (a stalled Redis answers late): batches are
    numbered, Redis keeps the last number applied per writer (`...:usage:batch:<writer>`,
    a day), and a retried batch is not counted twice."""

    def __init__(self, redis: aioredis.Redis, namespace: str, *, timeout_s: float) -> None:
        self.layout = UsageLayout(namespace)
        self._script = ScriptCaller(redis, lua.USAGE_FLUSH, timeout_s=timeout_s)
        self._batch_key = self.layout.batch(secrets.token_hex(8))
        self._numbers = itertools.count(1)

    def batch(
        self,
        buckets: Mapping[int, Mapping[Series, list[int]]],
        charges: list[Charge],
        now: float,
    ) -> Batch:
        """`buckets`: unix minute → series → [requests, prompt, completion, micro-USD]."""
        lay = self.layout
        keys: list[Any] = [lay.over, lay.over_rev, self._batch_key]
        args: list[Any] = []
        for minute, cells in buckets.items():
            keys += (lay.minute(minute), lay.day(minute // 1440))
            fields: list[Any] = []
            for series, counts in cells.items():
                base = SEP.join(series) + SEP
                for metric, n in zip(METRICS, counts, strict=True):
                    if n:
                        fields += (base + metric, n)
            args.append(len(fields) // 2)
            args += fields
        for c in charges:
            pid = period_id(c.period, now)
            m = member(c.scope, c.name, pid)
            keys.append(lay.spend(m))
            ttl = 0 if c.period == "total" else period_end(c.period, now) - int(now) + 86_400
            args += (c.micro_usd, c.limit_micro_usd, ttl, m, period_end(c.period, now))
        number = next(self._numbers) if buckets or charges else 0
        return Batch(
            number, keys, [len(buckets), len(charges), number, BATCH_TTL_S, *args], charges, now
        )

    async def send(self, batch: Batch, known_rev: str) -> FlushResult:
        """Raises `StoreError` when Redis cannot answer (the batch may or may not have been
        counted: send it again, it is counted once)."""
        head = [MINUTE_TTL_S, DAY_TTL_S, known_rev, int(batch.now)]
        try:
            res = await self._script(batch.keys, head + batch.args)
        except REDIS_ERRORS as exc:
            raise store_error(exc, "usage flush") from None
        rev = _text(res[0])
        n = len(batch.charges)
        totals = [int(x) for x in res[1 : 1 + n]]
        over: dict[str, Over] | None = None
        if rev != known_rev:
            over = {}
            rest = res[1 + n :]
            for i in range(0, len(rest) - 1, 2):
                total, _, ends = _text(rest[i + 1]).partition(" ")
                over[_text(rest[i])] = Over(int(total), int(ends or 0))
        return FlushResult(totals, rev, over)

    async def flush(
        self,
        buckets: Mapping[int, Mapping[Series, list[int]]],
        charges: list[Charge],
        known_rev: str,
        now: float,
    ) -> FlushResult:
        """`batch` and `send` in one."""
        return await self.send(self.batch(buckets, charges, now), known_rev)

    async def aclose(self) -> None:
        await self._script.reset()


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


# -- the query -----------------------------------------------------------------------------


def bucket_keys(layout: UsageLayout, start: int, end: int) -> list[str]:
    """The buckets covering [start, end) (unix seconds, widened to whole minutes): the day
    buckets of whole UTC days inside it, minute buckets for the rest."""
    m0, m1 = start // 60, -(-end // 60)
    out: list[str] = []
    m = m0
    while m < m1:
        if m % 1440 == 0 and m + 1440 <= m1:
            out.append(layout.day(m // 1440))
            m += 1440
        else:
            out.append(layout.minute(m))
            m += 1
    return out


def widen(start: int, end: int, bucket: str) -> tuple[int, int]:
    """[start, end) widened to whole UTC buckets of `bucket` (minute, hour, day)."""
    size = BUCKET_S[bucket]
    return start // size * size, -(-end // size) * size


def check_query(
    start: int, end: int, group_by: Iterable[str], bucket: UsageBucket | None = None
) -> list[str]:
    """The dimensions to group by, each once; ValueError naming what is wrong."""
    groups = list(dict.fromkeys(group_by))
    for dim in groups:
        if dim not in USAGE_DIMENSIONS:
            raise ValueError(f"group_by: {dim!r} is not one of {', '.join(USAGE_DIMENSIONS)}")
    if end <= start:
        raise ValueError(f"the range is empty: from {start} is not before to {end}")
    if end - start > MAX_RANGE_S:
        raise ValueError(f"the range is longer than {MAX_RANGE_S // 86_400} days")
    if bucket is not None:
        if bucket not in BUCKET_S:
            raise ValueError(f"bucket: {bucket!r} is not one of {', '.join(USAGE_BUCKETS)}")
        lo, hi = widen(start, end, bucket)
        n = (hi - lo) // BUCKET_S[bucket]
        if n > MAX_USAGE_BUCKETS:
            raise ValueError(
                f"bucket: {n} {bucket}s from {utc(lo)} to {utc(hi)} is more than "
                f"{MAX_USAGE_BUCKETS} buckets an answer; ask for a larger bucket or a "
                "shorter range"
            )
    return groups


class UsageReader:
    """Sums a namespace's usage buckets over a time range."""

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self.layout = UsageLayout(namespace)

    async def query(
        self,
        *,
        start: int,
        end: int,
        filters: Mapping[str, str | None] | None = None,
        group_by: Iterable[str] = (),
        bucket: UsageBucket | None = None,
    ) -> UsageReport:
        """Usage over [start, end); `filters` by dimension (key, model, provider, team; a
        team filter of '' matches keys without a team), rows per distinct `group_by`, and
        per UTC `bucket` (minute, hour, day) when given, over the range widened to whole
        buckets (rows of buckets without usage are left out)."""
        groups = check_query(start, end, group_by, bucket)
        # Where each dimension sits in a field: "<key>|<team>|<model>|<provider>|<metric>".
        pos = {"key": 0, "team": 1, "model": 2, "provider": 3}
        want = [(pos[dim], v) for dim, v in (filters or {}).items() if v is not None]
        gpos = [pos[dim] for dim in groups]
        if bucket is None:
            keys: list[tuple[str, int | None]] = [
                (k, None) for k in bucket_keys(self.layout, start, end)
            ]
        else:
            start, end = widen(start, end, bucket)
            keys = self._time_keys(start, end, BUCKET_S[bucket])
        sums: dict[tuple[int | None, tuple[str, ...]], list[int]] = {}
        try:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                async with self.redis.pipeline(transaction=False) as pipe:
                    for k, _ in chunk:
                        pipe.hgetall(k)
                    found = await pipe.execute()
                for (_, t), cells in zip(chunk, found, strict=True):
                    for field, value in cells.items():
                        parts = _text(field).split(SEP)
                        if len(parts) != 5 or parts[4] not in METRICS:
                            continue  # not ours: ignore rather than fail the whole answer
                        if any(parts[p] != v for p, v in want):
                            continue
                        g = (t, tuple(parts[p] for p in gpos))
                        acc = sums.get(g)
                        if acc is None:
                            acc = sums[g] = [0, 0, 0, 0]
                        acc[METRICS.index(parts[4])] += int(value)
        except REDIS_ERRORS as exc:
            raise store_error(exc, "usage query") from None
        rows = [
            _row(dict(zip(groups, g, strict=True)), acc, t)
            for (t, g), acc in sorted(sums.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1]))
            if groups or bucket
        ]
        total = [sum(acc[i] for acc in sums.values()) for i in range(4)]
        return UsageReport(
            namespace=self.namespace,
            from_=start,
            to=end,
            group_by=groups,
            rows=rows,
            total=_row({}, total),
            bucket=bucket,
        )

    def _time_keys(self, start: int, end: int, size: int) -> list[tuple[str, int | None]]:
        """The buckets of [start, end) (whole buckets of `size` seconds), each with the
        start of the time bucket it counts towards: day buckets for days, minutes else."""
        lay = self.layout
        if size == 86_400:
            return [(lay.day(d), d * 86_400) for d in range(start // 86_400, end // 86_400)]
        return [(lay.minute(m), m * 60 // size * size) for m in range(start // 60, end // 60)]


def _row(names: Mapping[str, str], acc: list[int], t: int | None = None) -> UsageRow:
    requests, prompt, completion, micro = acc
    return UsageRow(
        t=t,
        key=names.get("key"),
        model=names.get("model"),
        provider=names.get("provider"),
        team=names.get("team"),
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_micro_usd=micro,
        cost_usd=round(micro / MICRO, 6),
    )


def utc(ts: float) -> str:
    """`2026-11-30T22:15:00Z`, for messages."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
