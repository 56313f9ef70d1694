"""A key's budget on three replica processes: once its spend crosses the limit, every
replica answers 429 `budget_exceeded` within one flush interval of the crossing reaching
Redis, and the fleet overshoots by no more than the stated bound (`proxy.usage`): the
requests in flight at the crossing plus what the fleet admits while the crossing travels
(at most two flush intervals: to Redis, then to the others).

The budgeted key is a key of the collection (`configbus.keystore`), as an admin makes one.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis as syncredis
import redis.asyncio as aioredis

from configbus.document import Budget
from configbus.keystore import KeyStore
from configbus.testing import key_sha256
from configbus.usage import UsageLayout
from tests.proxy.helpers import Mock, Replica, data_for, publish, running
from tests.support import RedisServer, wait_for

pytestmark = pytest.mark.slow

NS = "budget"
REPLICAS = 3
WORKERS = 4  # per replica: requests in flight at once
FLUSH_S = 1.0
PROMPT = COMPLETION = 10
PRICE = 100.0  # USD per million tokens, both ways: 2000 micro-dollars a request
COST = (PROMPT + COMPLETION) * PRICE  # micro-dollars
LIMIT_USD = 0.5  # 250 requests


def budgeted_key(redis_url: str) -> tuple[str, str]:
    """A collection key with the budget: (its id, the key)."""

    async def go() -> tuple[str, str]:
        r = aioredis.from_url(redis_url)
        try:
            entry, key = await KeyStore(r, NS).create(
                name="budgeted", budget=Budget(limit_usd=LIMIT_USD, period="total")
            )
        finally:
            await r.aclose()
        assert key is not None
        return entry.id, key

    return asyncio.run(go())


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


def test_a_key_over_budget_is_refused_by_every_replica_within_a_flush(redis: RedisServer) -> None:
    a = Mock("A")
    env = {"CONFIGBUS_USAGE_FLUSH_S": str(FLUSH_S)}
    replicas = [Replica(redis.url, NS, replica_id=f"budget-{i}", env=env) for i in range(REPLICAS)]
    with running(a, *replicas):
        a.control(prompt_tokens=PROMPT, completion_tokens=COMPLETION, latency_ms=5)
        data = data_for(a, a)
        data["models"][0]["deployments"][0]["price"] = {
            "input_per_million": PRICE,
            "output_per_million": PRICE,
        }
        data["clients"] += [{"name": "free", "key_sha256": key_sha256("sk-free")}]
        key_id, key = budgeted_key(redis.url)
        v = publish(redis.url, NS, data)
        for r in replicas:
            wait_for(lambda r=r: r.version() == v, timeout=10, what=f"{r.url} on {v}")

        # When the crossing reached Redis: the key's entry in the over-budget hash.
        over_key = UsageLayout(NS).over
        seen_in_redis: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            r = syncredis.Redis.from_url(redis.url)
            while not stop.is_set() and not seen_in_redis:
                if r.hlen(over_key):
                    seen_in_redis.append(time.monotonic())
                time.sleep(0.002)
            r.close()

        watcher = threading.Thread(target=watch)
        watcher.start()
        log: list[tuple[int, float, float, int, str | None]] = []
        asyncio.run(load(replicas, key, log))
        stop.set()
        watcher.join()
        free = httpx.post(
            replicas[0].url + "/v1/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            headers={"authorization": "Bearer sk-free"},
            timeout=5,
        )
        assert free.status_code == 200  # another key is not touched
        # Every answered request's spend reaches Redis (the replicas' last ticks).
        spend_key = UsageLayout(NS).spend(f"key|{key_id}|t")
        r = syncredis.Redis.from_url(redis.url)
        answered = sum(1 for *_, status, _ in log if status == 200)
        wait_for(
            lambda: int(r.get(spend_key) or 0) == answered * COST,
            timeout=5,
            what="every answered request's spend in Redis",
        )
        r.close()

    ok = sorted(t1 for _, _, t1, status, _ in log if status == 200)
    assert all(status in (200, 429) for *_, status, _ in log)
    assert all(code == "budget_exceeded" for *_, status, code in log if status == 429)
    n_limit = math.ceil(LIMIT_USD * 1e6 / COST)
    assert len(ok) >= n_limit
    crossed = ok[n_limit - 1]  # the answer whose spend reached the limit
    assert seen_in_redis, "the crossing never reached Redis"
    in_redis = seen_in_redis[0]
    slack = 0.1  # a request's own round trip and scheduling on a shared machine
    for i in range(REPLICAS):
        late = [
            t0
            for ri, t0, _, status, _ in log
            if ri == i and status == 200 and t0 > in_redis + FLUSH_S + slack
        ]
        assert not late, f"replica {i} answered {len(late)} requests started after it must know"
        refused = [t0 for ri, t0, _, status, _ in log if ri == i and status == 429]
        assert refused, f"replica {i} never refused"
    # The overshoot, against the bound: in flight at the crossing, plus what the fleet
    # admitted at the measured rate during two flush intervals.
    before = [t for t in ok if t <= crossed]
    rate = len(before) / max(1e-3, before[-1] - log[0][1])
    in_flight = REPLICAS * WORKERS
    overshoot = (len(ok) - n_limit) * COST
    bound = (in_flight + rate * 2 * FLUSH_S) * COST
    print(
        f"\nbudget {LIMIT_USD} USD: {len(ok)} answered ({n_limit} within it), overshoot "
        f"{overshoot / 1e6:.4f} USD = {len(ok) - n_limit} requests; bound {bound / 1e6:.4f} USD "
        f"({in_flight} in flight + {rate:.0f}/s x {2 * FLUSH_S:g} s); crossing in Redis "
        f"{in_redis - crossed:+.3f} s after the crossing answer; last answer "
        f"{ok[-1] - in_redis:+.3f} s after Redis knew"
    )
    assert overshoot <= bound
    # Near the limit the replicas flush ten times as often: every replica stops the key
    # within one flush interval of the answer that crossed it (not only of Redis knowing).
    for i in range(REPLICAS):
        late = [
            t0
            for ri, t0, _, status, _ in log
            if ri == i and status == 200 and t0 > crossed + FLUSH_S
        ]
        assert not late, f"replica {i}: {len(late)} answered after one interval of the crossing"


async def load(
    replicas: list[Replica], key: str, log: list[tuple[int, float, float, int, str | None]]
) -> None:
    """WORKERS loops per replica until every replica has refused for a second (or 30 s)."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {key}"}
    first_refusal: dict[int, float] = {}
    deadline = time.monotonic() + 30

    def done() -> bool:
        if time.monotonic() > deadline:
            return True
        return len(first_refusal) == REPLICAS and time.monotonic() > max(first_refusal.values()) + 1

    async def worker(http: httpx.AsyncClient, i: int, url: str) -> None:
        while not done():
            t0 = time.monotonic()
            res = await http.post(url + "/v1/chat/completions", json=body, headers=headers)
            t1 = time.monotonic()
            code: Any = None
            if res.status_code == 429:
                code = res.json()["error"]["code"]
                first_refusal.setdefault(i, t1)
            log.append((i, t0, t1, res.status_code, code))

    limits = httpx.Limits(max_connections=REPLICAS * WORKERS)
    async with httpx.AsyncClient(timeout=10, limits=limits) as http:
        await asyncio.gather(
            *(worker(http, i, r.url) for i, r in enumerate(replicas) for _ in range(WORKERS))
        )
