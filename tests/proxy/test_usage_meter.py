"""The replica's usage meter against a real Redis: budgets stop a key locally, fleet-wide
after a flush, by key and by team; counts survive Redis being away. Keys of the collection
are `ClientRuntime(key_id=...)` here (the proxy finds them by their hash elsewhere)."""

from __future__ import annotations

import types
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

import proxy.usage
from configbus.document import Budget
from configbus.errors import StoreError
from configbus.usage import UsageLayout, UsageReader, UsageWriter, member
from proxy.runtime import ClientRuntime
from proxy.usage import Meter
from tests.support import RedisServer, free_port

NOW = 1_796_076_900.0  # 2026-11-30T22:15Z
# 1 micro-dollar per prompt token, 2 per completion token (USD 1 and 2 per million).
TARGET: Any = types.SimpleNamespace(
    provider=types.SimpleNamespace(name="p1"), price_in=10**6, price_out=2 * 10**6
)


def rt(**teams: Budget) -> Any:
    return types.SimpleNamespace(team_budgets=teams)


def key(kid: str, usd: float | None = None, team: str | None = None) -> ClientRuntime:
    budget = Budget(limit_usd=usd, period="day") if usd is not None else None
    return ClientRuntime(kid, ("*",), None, key_id=kid, team=team, budget=budget)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.from_url(redis_server.url)
    yield r
    await r.aclose()


def meter(redis: aioredis.Redis, namespace: str, clock: Clock | None = None) -> Meter:
    return Meter(UsageWriter(redis, namespace, timeout_s=1), clock=clock or Clock())


async def test_a_key_stops_here_before_any_flush_once_its_spend_crosses_its_budget(
    redis: aioredis.Redis, namespace: str
) -> None:
    m, k = meter(redis, namespace), key("key_a", usd=0.001)  # 1000 micro-dollars a day
    m.count(rt(), k, "chat", TARGET, 200, 200)  # 600
    assert not m.over and m.refusal(k, rt()) is None
    m.count(rt(), k, "chat", TARGET, 100, 200)  # 500 more: over
    err = m.refusal(k, rt())
    assert err is not None and err.status == 429 and err.code == "budget_exceeded"
    assert err.param == "key" and "key 'key_a'" in err.message
    assert err.headers is not None and 0 < int(err.headers["retry-after"]) <= 86_400
    assert await m.flush()
    assert m.refusal(k, rt()) is not None  # and still after the flush (Redis says so too)
    # The budget raised: the key works again at once.
    assert m.refusal(key("key_a", usd=1.0), rt()) is None
    await m.aclose()


async def test_every_replica_learns_of_a_key_over_budget_at_its_next_flush(
    redis: aioredis.Redis, namespace: str
) -> None:
    a, b = meter(redis, namespace), meter(redis, namespace)
    k = key("key_a", usd=0.001)
    a.count(rt(), k, "chat", TARGET, 1000, 0)
    assert b.refusal(k, rt()) is None and not b.over
    assert await a.flush()
    assert not b.over  # b has not flushed yet: it does not know
    assert await b.flush()  # nothing of its own to send; it hears of key_a
    assert b.over and b.refusal(k, rt()) is not None
    assert b.refusal(key("key_b", usd=0.001), rt()) is None  # another key is not touched
    await a.aclose()
    await b.aclose()


async def test_a_team_budget_is_shared_by_its_keys(redis: aioredis.Redis, namespace: str) -> None:
    teams = rt(ml=Budget(limit_usd=0.001, period="month"))
    a, b = meter(redis, namespace), meter(redis, namespace)
    k1, k2, other = key("key_1", team="ml"), key("key_2", team="ml"), key("key_3", team="ops")
    a.count(teams, k1, "chat", TARGET, 600, 0)
    b.count(teams, k2, "chat", TARGET, 600, 0)  # each under the team's 1000; both over it
    assert await a.flush() and await b.flush() and await a.flush()
    for m in (a, b):
        for k in (k1, k2):
            err = m.refusal(k, teams)
            assert err is not None and err.param == "team", (m, k)
        assert m.refusal(other, teams) is None
    await a.aclose()
    await b.aclose()


async def test_counts_wait_for_redis_and_go_out_whole_when_it_is_back(
    redis: aioredis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(proxy.usage, "MAX_PENDING", 3)
    clock = Clock()
    down = aioredis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    m = Meter(UsageWriter(down, namespace, timeout_s=0.2), clock=clock)
    ks = [key(f"key_{i}") for i in range(3)]
    for _ in range(4):  # four minutes of three keys: past the bound, minutes fold
        for k in ks:
            m.count(rt(), k, "chat", TARGET, 1, 1)
        assert not await m.flush()
        clock.now += 60
    assert m.folded > 0 and m.pending_cells <= 2 * len(ks)
    m.writer = UsageWriter(redis, namespace, timeout_s=1)
    assert await m.flush()
    assert m.pending_cells == 0
    total = (await UsageReader(redis, namespace).query(start=int(NOW), end=int(clock.now))).total
    assert (total.requests, total.prompt_tokens, total.completion_tokens) == (12, 12, 12)
    assert total.cost_micro_usd == 12 * 3
    await m.aclose()
    await down.aclose()


async def test_fractions_of_a_micro_dollar_are_carried_not_lost(
    redis: aioredis.Redis, namespace: str
) -> None:
    cheap: Any = types.SimpleNamespace(
        provider=types.SimpleNamespace(name="p"),
        price_in=150_000,
        price_out=0,  # $0.15/M
    )
    m = meter(redis, namespace)
    for _ in range(7):
        m.count(rt(), key("key_a"), "chat", cheap, 3, 0)  # 0.45 micro-dollars each
        assert await m.flush()
    total = (await UsageReader(redis, namespace).query(start=int(NOW), end=int(NOW) + 60)).total
    assert total.cost_micro_usd == 3  # floor(7 x 0.45 = 3.15); the 0.15 waits for more
    await m.aclose()


async def test_a_flush_whose_answer_was_lost_is_counted_once(
    redis: aioredis.Redis, namespace: str
) -> None:
    """A stalled Redis runs a flush after the replica gave up on it: the replica sends the
    same batch again, which Redis recognises."""
    m, k = meter(redis, namespace), key("key_a", usd=1.0)
    real = m.writer.send
    lost = [True]

    async def send(batch: Any, rev: str) -> Any:
        res = await real(batch, rev)
        if lost and batch.number:
            lost.clear()
            raise StoreError("no reply from Redis in 1s")
        return res

    m.writer.send = send  # type: ignore[method-assign]
    m.count(rt(), k, "chat", TARGET, 100, 0)
    assert not await m.flush()
    m.count(rt(), k, "chat", TARGET, 10, 0)  # more, while the first answer is missing
    assert await m.flush()
    total = (await UsageReader(redis, namespace).query(start=int(NOW), end=int(NOW) + 60)).total
    assert (total.requests, total.prompt_tokens, total.cost_micro_usd) == (2, 110, 110)
    spend = await redis.get(UsageLayout(namespace).spend(member("key", "key_a", "d20261130")))
    assert spend == b"110"
    await m.aclose()
