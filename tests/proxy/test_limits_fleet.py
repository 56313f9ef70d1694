"""Fleet-wide limits measured on real processes: three replicas share each limit within the
stated overshoot bound, and a Redis outage under load fails no request.

Accuracy: each limit (a key at 300 rpm with a burst of 30; a global limit shared by three
keys; a provider limit; a key's tpm with streamed answers) is offered three times its rate
for 20 s, evenly over the three replicas of a fleet. A token bucket starting full admits
exactly `burst + rate x T`; the fleet may be off by at most replicas x 2 x lease_cap
(`proxy.allowance`): a lease held plus a lease of credit per replica (tokens: plus one
request's estimate). The four cases run at once, on two fleets (a global limit would
cap the other cases' traffic), so the test takes ~30 s.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from configbus.testing import key_sha256
from proxy.allowance import lease_cap
from tests.proxy.helpers import AUTH, Mock, Replica, chat, data_for, publish, running
from tests.support import RedisServer, wait_for

pytestmark = pytest.mark.slow

SECONDS = 20.0
RATE = 5.0  # per second: 300 per minute
BURST = 30
OFFERED = 3 * RATE
REPLICAS = 3
TOKENS_PER_ANSWER = 40
TPM = 12_000  # 200 tokens/s: five answers a second
TOKEN_BURST = 1_200


def client(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "key_sha256": key_sha256(f"sk-{name}"), **fields}


def fleet_x(a: Mock, t: Mock) -> dict[str, Any]:
    """Key, provider and tokens limits, each on traffic of its own."""
    data = data_for(a, a)
    data["providers"] += [
        {"name": "limited", "base_url": a.url + "/v1", "rate_limit": {"rpm": 300, "burst": 30}},
        {"name": "tok", "base_url": t.url + "/v1"},
    ]
    data["models"] += [
        {"name": "p", "deployments": [{"provider": "limited", "model": "mock"}]},
        {"name": "t", "deployments": [{"provider": "tok", "model": "mock"}]},
    ]
    data["clients"] += [
        client("k300", rate_limit={"rpm": 300, "burst": BURST}),
        client("ktpm", rate_limit={"tpm": TPM, "burst": TOKEN_BURST}),
        client("free"),
    ]
    return data


def fleet_y(a: Mock) -> dict[str, Any]:
    data = data_for(a, a)
    data["rate_limits"] = {"global": {"rpm": 300, "burst": BURST}}
    data["clients"] += [client(f"g{i}") for i in range(3)]
    return data


async def offer(
    http: httpx.AsyncClient, urls: list[str], keys: list[str], body: dict[str, Any]
) -> tuple[list[int], float]:
    """OFFERED requests a second for SECONDS, round-robin over replicas and keys; the
    answers' statuses and the time from the first send to the last, as sent (on a busy
    machine the sends lag their schedule, and the buckets refill over the real time)."""
    n = int(OFFERED * SECONDS)
    start = time.monotonic()
    sent: list[float] = []

    async def one(i: int) -> int:
        await asyncio.sleep(max(0.0, start + i / OFFERED - time.monotonic()))
        sent.append(time.monotonic())
        resp = await http.post(
            urls[i % len(urls)] + "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer sk-{keys[i % len(keys)]}"},
        )
        if resp.status_code == 200 and body.get("stream"):
            assert b"[DONE]" in resp.content
        return resp.status_code

    codes = await asyncio.gather(*(one(i) for i in range(n)))
    return list(codes), max(sent) - min(sent)


@pytest.fixture(scope="module")
def fleets(redis_server: RedisServer) -> Iterator[tuple[list[Replica], list[Replica]]]:
    a, t = Mock("A"), Mock("T")
    xs = [Replica(redis_server.url, "acc-x", replica_id=f"x{i}") for i in range(REPLICAS)]
    ys = [Replica(redis_server.url, "acc-y", replica_id=f"y{i}") for i in range(REPLICAS)]
    with running(a, t, *xs, *ys):
        t.control(usage_tokens=TOKENS_PER_ANSWER)
        vx = publish(redis_server.url, "acc-x", fleet_x(a, t))
        vy = publish(redis_server.url, "acc-y", fleet_y(a))
        for r, v in [*((r, vx) for r in xs), *((r, vy) for r in ys)]:
            wait_for(lambda r=r, v=v: r.version() == v, timeout=15, what=f"{r.url} at v{v}")
        yield xs, ys


def test_four_limits_hold_fleet_wide_within_the_stated_bound(
    fleets: tuple[list[Replica], list[Replica]],
) -> None:
    xs, ys = fleets
    x_urls, y_urls = [r.url for r in xs], [r.url for r in ys]
    chat_body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}

    async def run() -> dict[str, tuple[list[int], float]]:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(timeout=10, limits=limits) as http:
            cases = await asyncio.gather(
                offer(http, x_urls, ["k300"], chat_body),
                offer(http, y_urls, ["g0", "g1", "g2"], chat_body),
                offer(http, x_urls, ["free"], {**chat_body, "model": "p"}),
                offer(http, x_urls, ["ktpm"], {**chat_body, "model": "t", "stream": True}),
            )
        return dict(zip(["key", "global", "provider", "tpm"], cases, strict=True))

    results = asyncio.run(run())
    report = {}
    for case, (codes, span) in results.items():
        assert set(codes) <= {200, 429}, (case, sorted(set(codes)))
        admitted = codes.count(200)
        if case == "tpm":
            exact = TOKEN_BURST + TPM / 60 * span
            bound = REPLICAS * (2 * lease_cap(TPM / 60, TOKEN_BURST) + TOKENS_PER_ANSWER)
            got = admitted * TOKENS_PER_ANSWER
        else:
            exact = BURST + RATE * span
            bound = REPLICAS * 2 * lease_cap(RATE, BURST)
            got = admitted
        report[case] = {"admitted": got, "exact": round(exact, 1), "bound": bound}
    print("accuracy:", report)
    for case, r in report.items():
        assert abs(r["admitted"] - r["exact"]) <= r["bound"], (case, report)


def test_redis_stopped_under_load_fails_nothing_then_exact_limits_resume(
    own_redis: RedisServer,
) -> None:
    a = Mock("A")
    replicas = [Replica(own_redis.url, "outage", replica_id=f"o{i}") for i in range(2)]
    data = data_for(a, a)
    data["rate_limits"] = {"global": {"rpm": 600_000, "tpm": 100_000_000}}
    data["providers"][0]["rate_limit"] = {"rpm": 600_000}
    data["clients"] += [
        client("busy", rate_limit={"rpm": 600_000, "tpm": 100_000_000}),
        client("small", rate_limit={"rpm": 5}),
    ]
    data["ip_rules"] = {"rate_limit": {"rpm": 600_000}}

    def statuses() -> list[dict[str, Any]]:
        return [httpx.get(r.url + "/status", timeout=2).json()["rate_limits"] for r in replicas]

    def small_admitted(http: httpx.Client) -> int:
        codes = [chat(http, replicas[i % 2].url, key="sk-small").status_code for i in range(12)]
        assert set(codes) <= {200, 429}
        return codes.count(200)

    with running(a, *replicas), httpx.Client(timeout=5) as http:
        v = publish(own_redis.url, "outage", data)
        for r in replicas:
            wait_for(lambda r=r: r.version() == v, timeout=10)
        assert small_admitted(http) == 5  # exact, fleet-wide

        codes: list[int] = []
        stop = False

        async def load() -> None:
            async with httpx.AsyncClient(timeout=5) as c:
                i = 0
                while not stop:
                    i += 1
                    resp = await c.post(
                        replicas[i % 2].url + "/v1/chat/completions",
                        json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                        headers={"authorization": "Bearer sk-busy"},
                    )
                    codes.append(resp.status_code)
                    await asyncio.sleep(0.005)

        import threading

        thread = threading.Thread(target=lambda: asyncio.run(load()))
        thread.start()
        try:
            wait_for(lambda: len(codes) > 50, timeout=10, what="load running")
            own_redis.stop(hard=True)
            wait_for(
                lambda: all(s["mode"] == "local" for s in statuses()),
                timeout=10,
                what="both replicas limiting locally",
            )
            st = statuses()
            assert all(s["local_share"] == "1/2" and s["live_replicas"] == 2 for s in st), st
            metrics = httpx.get(replicas[0].url + "/metrics", timeout=2).text
            assert "configbus_proxy_rate_limit_local 1.0" in metrics
            during = len(codes)
            wait_for(lambda: len(codes) > during + 100, timeout=10, what="load while local")
            # Locally each replica allows its half of the small key's 5 (2.5, so 2).
            assert small_admitted(http) == 4
            own_redis.restart(empty=True)
            wait_for(
                lambda: all(s["mode"] == "fleet" for s in statuses()),
                timeout=10,
                what="exact fleet limits back",
            )
            back = len(codes)
            wait_for(lambda: len(codes) > back + 50, timeout=10, what="load after return")
        finally:
            stop = True
            thread.join(timeout=10)
        assert len(codes) > 200 and set(codes) == {200}, sorted(set(codes))
        # Redis came back empty: the small key's bucket is full again and exact once more.
        assert small_admitted(http) == 5
        assert (
            http.post(
                replicas[0].url + "/v1/chat/completions",
                json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
                headers=AUTH,
            ).status_code
            == 200
        )
