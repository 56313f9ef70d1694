from __future__ import annotations

import fakeredis
import pytest

from configbus.connection import connect
from proxy.limits import FleetLimiter, LocalWindow
from tests.support import RedisServer, free_port


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_local_window_allows_limit_then_refuses_until_the_window_ends() -> None:
    clock = Clock()
    w = LocalWindow(60, clock)
    verdicts = [w.hit("k", 3) for _ in range(5)]
    assert [v.allowed for v in verdicts] == [True, True, True, False, False]
    assert [v.remaining for v in verdicts] == [2, 1, 0, 0, 0]
    clock.now = 45
    v = w.hit("k", 3)
    assert not v.allowed
    assert v.headers() == {
        "x-ratelimit-limit": "3",
        "x-ratelimit-remaining": "0",
        "retry-after": "15",
    }
    assert w.hit("other", 3).allowed
    clock.now = 60
    assert w.hit("k", 3).allowed


async def test_fleet_limiter_is_shared_through_redis() -> None:
    server = fakeredis.FakeServer()
    a = FleetLimiter(fakeredis.FakeAsyncRedis(server=server), "ns")
    b = FleetLimiter(fakeredis.FakeAsyncRedis(server=server), "ns")
    results = [await (a if i % 2 else b).hit("team", 4) for i in range(7)]
    assert [r.allowed for r in results] == [True] * 4 + [False] * 3
    assert 59 <= results[-1].reset_s <= 60
    assert results[-1].headers()["retry-after"] == "60"
    keys = await a.redis.keys("*")
    assert keys == [b"cb:{ns}:rl:client:team"]
    await a.redis.aclose()
    await b.redis.aclose()


async def test_fleet_limiter_falls_back_to_local_while_redis_is_down() -> None:
    clock = Clock()
    redis = connect(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2, retries=0)
    lim = FleetLimiter(redis, "ns", clock=clock)
    assert (await lim.hit("team", 2)).allowed
    assert lim.degraded
    assert (await lim.hit("team", 2)).allowed
    assert not (await lim.hit("team", 2)).allowed
    await redis.aclose()


@pytest.mark.parametrize("limit", [1, 10])
def test_headers_without_retry_after_when_allowed(limit: int) -> None:
    v = LocalWindow().hit("k", limit)
    assert v.allowed
    assert "retry-after" not in v.headers()


async def test_hits_queued_behind_a_call_in_flight_share_the_next_call() -> None:
    import asyncio

    redis = fakeredis.FakeAsyncRedis()
    lim = FleetLimiter(redis, "ns")
    calls = []
    real = lim.counter._call

    async def counting(keys: list[str]) -> object:
        calls.append(len(keys))
        await asyncio.sleep(0.01)  # a round trip, during which other hits queue up
        return await real(keys)

    lim.counter._call = counting  # type: ignore[method-assign]
    results = await asyncio.gather(*(lim.hit("a" if i % 2 else "b", 3) for i in range(10)))
    assert calls == [1, 9]  # the first went alone, at once; the rest together
    assert sum(r.allowed for r in results) == 6  # 3 for a, 3 for b
    assert [r.remaining for r in results[:6]] == [2, 2, 1, 1, 0, 0]
    await redis.aclose()


@pytest.mark.slow
async def test_fleet_limiter_survives_a_paused_redis_and_keeps_replies_in_step(
    own_redis: RedisServer,
) -> None:
    """Found by the chaos soak: a read timeout made redis-py return None, which the limiter
    indexed (TypeError: a 500 to the client) while the late reply stayed on the connection,
    to be read as the answer to the next call."""
    redis = connect(own_redis.url, retries=0)
    lim = FleetLimiter(redis, "ns", timeout_s=0.2)
    try:
        assert (await lim.hit("team", 100)).remaining == 99
        own_redis.pause()
        try:
            paused = await lim.hit("team", 100)  # local window, no exception
        finally:
            own_redis.resume()
        assert paused.allowed and lim.degraded
        lim._down_until = 0.0  # retry Redis now instead of after the pause
        # Redis may or may not have run the paused call once it woke up (its client had
        # gone): this hit is the 2nd or the 3rd, never an answer meant for another call.
        assert (await lim.hit("team", 100)).remaining in (97, 98)
        assert (await lim.hit("other", 100)).remaining == 99
    finally:
        await lim.aclose()
        await redis.aclose()
