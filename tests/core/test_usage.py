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


async def test_usage_over_time_sums_minutes_into_buckets(
    redis: aioredis.Redis, namespace: str
) -> None:
    w = UsageWriter(redis, namespace, timeout_s=2)
    m = NOV30 // 60  # 22:15
    await w.flush(
        {
            m: {("key_a", "ml", "chat", "p1"): [2, 10, 20, 300]},
            m + 1: {("key_b", "", "chat", "p2"): [1, 1, 2, 0]},
            m + 60: {("key_a", "ml", "chat", "p1"): [1, 5, 5, 7]},  # 23:15
        },
        [],
        "",
        NOV30,
    )
    r = UsageReader(redis, namespace)
    minutes = await r.query(start=NOV30, end=NOV30 + 3600 + 60, bucket="minute")
    assert [(x.t, x.requests) for x in minutes.rows] == [
        (NOV30, 2),
        (NOV30 + 60, 1),
        (NOV30 + 3600, 1),
    ]
    assert minutes.total.requests == 4 and minutes.bucket == "minute"
    # Hours: the range widens to whole UTC hours; rows per hour and group.
    hours = await r.query(start=NOV30, end=NOV30 + 3600, group_by=["key"], bucket="hour")
    hour = NOV30 // 3600 * 3600
    assert (hours.from_, hours.to) == (hour, hour + 7200)
    assert [(x.t, x.key, x.requests, x.cost_micro_usd) for x in hours.rows] == [
        (hour, "key_a", 2, 300),
        (hour, "key_b", 1, 0),
        (hour + 3600, "key_a", 1, 7),
    ]
    # Days: the day buckets; the total equals the sum of the rows.
    days = await r.query(start=NOV30 - 3 * 86_400, end=NOV30, bucket="day")
    assert [(x.t, x.requests) for x in days.rows] == [(NOV30 // 86_400 * 86_400, 4)]
    assert days.total.prompt_tokens == 16 == sum(x.prompt_tokens for x in days.rows)
    # Filtered: only key_a's hours.
    only = await r.query(start=NOV30, end=NOV30 + 7200, filters={"key": "key_a"}, bucket="hour")
    assert [x.requests for x in only.rows] == [2, 1]
    # Too many buckets for one answer: refused, naming the parameter.
    with pytest.raises(ValueError, match=r"^bucket: 2880 minutes .* more than 2000"):
        await r.query(start=NOV30 - 2 * 86_400, end=NOV30, bucket="minute")
    assert len((await r.query(start=NOV30 - 7 * 86_400, end=NOV30, bucket="hour")).rows) == 1
    await w.aclose()
