"""The one fleet counter (fixed windows in Redis) that the admin's publish limit and the
proxy's client limits count with."""

from __future__ import annotations

import asyncio
import time

import fakeredis
import pytest

from configbus.connection import connect
from configbus.counters import FleetCounter, counter_key
from configbus.errors import StoreUnavailable
from tests.support import RedisServer, free_port


@pytest.mark.parametrize(
    ("kind", "name", "namespace", "key"),
    [
        ("client", "team-a", "prod", "cb:{prod}:rl:client:team-a"),
        ("publish", "ada", None, "cb:{_}:rl:publish:ada"),
        # A name cannot move the key to another slot: the scope's tag comes first.
        ("publish", "a{b}c", None, "cb:{_}:rl:publish:a{b}c"),
    ],
)
def test_keys_sit_under_their_scopes_hash_tag(
    kind: str, name: str, namespace: str | None, key: str
) -> None:
    got = (
        counter_key(kind, name)
        if namespace is None
        else counter_key(kind, name, namespace=namespace)
    )
    assert got == key


async def test_counts_are_shared_by_every_counter_of_the_same_redis() -> None:
    server = fakeredis.FakeServer()
    a = FleetCounter(fakeredis.FakeAsyncRedis(server=server), window_s=60, timeout_s=1)
    b = FleetCounter(fakeredis.FakeAsyncRedis(server=server), window_s=60, timeout_s=1)
    key = counter_key("client", "team", namespace="ns")
    tallies = [await (a if i % 2 else b).count(key) for i in range(4)]
    assert [n for n, _ in tallies] == [1, 2, 3, 4]
    assert all(59_000 <= ttl <= 60_000 for _, ttl in tallies)
    assert (await a.count(counter_key("client", "other", namespace="ns")))[0] == 1
    assert 59_000 <= await a.redis.pttl(key) <= 60_000  # the key ends with its window
    for c in (a, b):
        await c.aclose()
        await c.redis.aclose()


async def test_hits_queued_behind_a_call_in_flight_share_the_next_call() -> None:
    redis = fakeredis.FakeAsyncRedis()
    counter = FleetCounter(redis, window_s=60, timeout_s=1)
    calls = []
    real = counter._call

    async def counting(keys: list[str]) -> object:
        calls.append(len(keys))
        await asyncio.sleep(0.01)  # a round trip, during which other hits queue up
        return await real(keys)

    counter._call = counting  # type: ignore[method-assign]
    tallies = await asyncio.gather(*(counter.count("a" if i % 2 else "b") for i in range(10)))
    assert calls == [1, 9]  # the first went alone, at once; the rest together
    assert [n for n, _ in tallies] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    await counter.aclose()
    await redis.aclose()


async def test_script_is_loaded_again_when_redis_lost_it() -> None:
    redis = fakeredis.FakeAsyncRedis()
    counter = FleetCounter(redis, window_s=60, timeout_s=1)
    assert (await counter.count("k"))[0] == 1
    await redis.script_flush()  # as after a restart
    assert (await counter.count("k"))[0] == 2
    await counter.aclose()
    await redis.aclose()


async def test_redis_down_raises_store_unavailable_to_each_hit() -> None:
    redis = connect(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2, retries=0)
    counter = FleetCounter(redis, window_s=60, timeout_s=0.2)
    results = await asyncio.gather(
        *(counter.count(f"k{i}") for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert "fleet counter: Redis unavailable" in str(results[0])
    await counter.aclose()
    await redis.aclose()


@pytest.mark.slow
async def test_a_paused_redis_fails_a_new_connection_within_the_timeout(
    own_redis: RedisServer,
) -> None:
    """A Redis that accepts connections but does not answer held the handshake of a new
    connection forever (its socket has no timeout), and every hit queued behind it."""
    redis = connect(own_redis.url, retries=0)
    counter = FleetCounter(redis, window_s=60, timeout_s=0.2)
    own_redis.pause()
    try:
        t0 = time.perf_counter()
        with pytest.raises(StoreUnavailable):
            await counter.count("k")
        assert time.perf_counter() - t0 < 1.0
    finally:
        own_redis.resume()
    assert (await counter.count("k"))[0] >= 1
    await counter.aclose()
    await redis.aclose()


async def test_a_hit_queued_behind_a_stalled_call_waits_one_timeout_not_two(
    own_redis: RedisServer,
) -> None:
    r = connect(own_redis.url)
    counter = FleetCounter(r, window_s=60, timeout_s=0.3)
    try:
        await counter.count("warm")  # connected, script loaded
        own_redis.pause()
        first = asyncio.create_task(counter.count("a"))
        await asyncio.sleep(0.15)  # `first`'s call is out; this hit queues behind it
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(StoreUnavailable):
            await counter.count("b")
        assert asyncio.get_running_loop().time() - t0 < 0.4  # one timeout (0.3 s), not 0.45
        with pytest.raises(StoreUnavailable):
            await first
    finally:
        own_redis.resume()
        await r.aclose()
