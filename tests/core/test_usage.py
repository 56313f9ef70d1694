from __future__ import annotations

import calendar
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from configbus.usage import (
    Charge,
    UsageLayout,
    UsageReader,
    UsageWriter,
    bucket_keys,
    member,
    period_end,
    period_id,
)
from tests.support import RedisServer

NOV30 = calendar.timegm((2026, 11, 30, 22, 15, 0))


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.from_url(redis_server.url)
    yield r
    await r.aclose()


def test_periods_are_utc_days_months_and_total() -> None:
    assert period_id("day", NOV30) == "d20261130"
    assert period_id("month", NOV30) == "m202611"
    assert period_id("total", NOV30) == "t"
    assert period_end("day", NOV30) == calendar.timegm((2026, 12, 1, 0, 0, 0))
    assert period_end("month", calendar.timegm((2026, 12, 5, 0, 0, 0))) == calendar.timegm(
        (2027, 1, 1, 0, 0, 0)
    )
    assert period_end("total", NOV30) == 0


def test_a_range_is_whole_days_where_it_can_be_and_minutes_elsewhere() -> None:
    lay = UsageLayout("ns")
    day = 20_000 * 86_400
    keys = bucket_keys(lay, day - 120, day + 86_400 + 90)
    assert keys[:2] == [lay.minute(day // 60 - 2), lay.minute(day // 60 - 1)]
    assert keys[2] == lay.day(20_000)
    assert keys[3:] == [lay.minute(day // 60 + 1440), lay.minute(day // 60 + 1441)]


async def test_a_flush_is_summed_back_by_any_filter_and_grouping(
    redis: aioredis.Redis, namespace: str
) -> None:
    w = UsageWriter(redis, namespace, timeout_s=2)
    m = NOV30 // 60
    await w.flush(
        {
            m: {
                ("key_a", "ml", "chat", "p1"): [2, 10, 20, 300],
                ("bob", "", "chat", "p2"): [1, 1, 2, 0],
            },
            m + 1: {("key_a", "ml", "code", "p1"): [1, 5, 5, 7]},
        },
        [],
        "",
        NOV30,
    )
    r = UsageReader(redis, namespace)
    total = (await r.query(start=NOV30 - 60, end=NOV30 + 180)).total
    assert (total.requests, total.prompt_tokens, total.completion_tokens) == (4, 16, 27)
    assert total.cost_micro_usd == 307 and total.cost_usd == 0.000307
    by = await r.query(start=NOV30, end=NOV30 + 120, group_by=["key", "model"])
    assert [(x.key, x.model, x.requests, x.team) for x in by.rows] == [
        ("bob", "chat", 1, None),
        ("key_a", "chat", 2, None),
        ("key_a", "code", 1, None),
    ]
    only = await r.query(start=NOV30, end=NOV30 + 120, filters={"team": "ml", "provider": "p1"})
    assert only.total.requests == 3 and only.rows == []
    # The day bucket holds the same sums: a whole-day query reads it alone.
    day = NOV30 // 86_400 * 86_400
    assert (await r.query(start=day, end=day + 86_400)).total == total
    # Outside the range: nothing.
    assert (await r.query(start=NOV30 + 600, end=NOV30 + 660)).total.requests == 0
    with pytest.raises(ValueError, match="group_by"):
        await r.query(start=NOV30, end=NOV30 + 60, group_by=["colour"])
    with pytest.raises(ValueError, match="empty"):
        await r.query(start=NOV30, end=NOV30)
    await w.aclose()


async def test_spend_over_a_limit_is_listed_for_every_replica(
    redis: aioredis.Redis, namespace: str
) -> None:
    a = UsageWriter(redis, namespace, timeout_s=2)
    b = UsageWriter(redis, namespace, timeout_s=2)
    res = await a.flush({}, [Charge("key", "key_a", "day", 600, 1000)], "", NOV30)
    assert res.totals == [600] and res.rev == "" and res.over is None
    res = await a.flush({}, [Charge("key", "key_a", "day", 500, 1000)], "", NOV30)
    assert res.totals == [1100] and res.rev and res.over is not None
    m = member("key", "key_a", "d20261130")
    assert res.over == {m: (1100, period_end("day", NOV30))}
    # Another replica that charged nothing learns of it at its next flush, once.
    seen = await b.flush({}, [], "", NOV30)
    assert seen.over == res.over
    assert (await b.flush({}, [], seen.rev, NOV30)).over is None
    # A later day: its own counter; the ended day's entry goes with the next change.
    tomorrow = NOV30 + 86_400
    res = await a.flush({}, [Charge("team", "ml", "total", 2000, 1500)], seen.rev, tomorrow)
    assert res.over == {member("team", "ml", "t"): (2000, 0)}
    spend = await redis.get(UsageLayout(namespace).spend(m))
    assert spend == b"1100" and 0 < await redis.ttl(UsageLayout(namespace).spend(m))
    await a.aclose()
    await b.aclose()
