"""A key's budget on three replica processes: once its spend crosses the limit, every
replica answers 429 `budget_exceeded` within one flush interval of the crossing reaching
Redis, and the fleet overshoots by no more than the stated bound (`proxy.usage`): the
requests in flight at the crossing plus what the fleet admits while the crossing travels
(at most two flush intervals: to Redis, then to the others).

The budgeted key is a document client given a budget by `tests.proxy.usage_shim` (the
proxy does not authenticate collection keys yet).
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis as syncredis

from configbus.testing import key_sha256
from configbus.usage import UsageLayout
from tests.proxy.helpers import SECRET_KEY, Mock, data_for, publish, running
from tests.support import RedisServer, Service, free_port, wait_for

pytestmark = pytest.mark.slow

NS = "budget"
REPLICAS = 3
WORKERS = 4  # per replica: requests in flight at once
FLUSH_S = 1.0
PROMPT = COMPLETION = 10
PRICE = 100.0  # USD per million tokens, both ways: 2000 micro-dollars a request
COST = (PROMPT + COMPLETION) * PRICE  # micro-dollars
LIMIT_USD = 0.5  # 250 requests
KEY = "sk-budgeted"


class ShimReplica:
    def __init__(self, redis_url: str, replica_id: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = Service(
            [sys.executable, "-m", "tests.proxy.usage_shim", "proxy", "--port", str(self.port)],
            env={
                "CONFIGBUS_REDIS_URL": redis_url,
                "CONFIGBUS_NAMESPACE": NS,
                "CONFIGBUS_SECRET_KEYS": SECRET_KEY,
                "CONFIGBUS_REPLICA_ID": replica_id,
                "CONFIGBUS_RECONCILE_INTERVAL_S": "1",
                "CONFIGBUS_USAGE_FLUSH_S": str(FLUSH_S),
                "UPSTREAM_B_KEY": "sk-upstream-b",
            },
            name=replica_id,
        )

    def version(self) -> int | None:
        v = httpx.get(self.url + "/status", timeout=2).json()["version"]
        return None if v is None else int(v)


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


def test_a_key_over_budget_is_refused_by_every_replica_within_a_flush(redis: RedisServer) -> None:
    a = Mock("A")
    replicas = [ShimReplica(redis.url, f"budget-{i}") for i in range(REPLICAS)]
    with running(a, *replicas):  # type: ignore[arg-type]
        a.control(prompt_tokens=PROMPT, completion_tokens=COMPLETION, latency_ms=5)
        data = data_for(a, a)
        data["models"][0]["deployments"][0]["price"] = {
            "input_per_million": PRICE,
            "output_per_million": PRICE,
        }
        data["clients"] += [
            {"name": "budgeted", "key_sha256": key_sha256(KEY)},
            {"name": "free", "key_sha256": key_sha256("sk-free")},
        ]
        data["metadata"] = {"budget.budgeted": f"{LIMIT_USD}/total"}
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
        asyncio.run(load(replicas, log))
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
        spend_key = UsageLayout(NS).spend("key|budgeted|t")
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


async def load(
    replicas: list[ShimReplica], log: list[tuple[int, float, float, int, str | None]]
) -> None:
    """WORKERS loops per replica until every replica has refused for a second (or 30 s)."""
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"authorization": f"Bearer {KEY}"}
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
