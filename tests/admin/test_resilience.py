from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from admin.breaker import BreakerOpen, CircuitBreaker
from configbus.breaker import BreakerState
from configbus.errors import StoreUnavailable
from configbus.testing import sample_data
from tests.admin.helpers import SECRET_KEY, TOKENS_ENV, app_for, auth, client
from tests.support import RedisServer, Service, free_port


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_opens_fails_fast_and_probes() -> None:
    clock = Clock()
    b = CircuitBreaker(failures=2, reset_s=5, clock=clock)
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise StoreUnavailable("down")

    async def up() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await b.call(down)
    assert b.state is BreakerState.OPEN and calls == 2
    with pytest.raises(BreakerOpen) as info:
        await b.call(up)
    assert calls == 2 and 0 < info.value.retry_after_s <= 5
    assert b.retry_after_header() == "5"
    clock.now += 5
    assert b.state is BreakerState.HALF_OPEN
    with pytest.raises(StoreUnavailable):
        await b.call(down)  # the probe fails: open again, for a full period
    assert b.state is BreakerState.OPEN
    clock.now += 5
    assert await b.call(up) == "ok"
    assert b.state is BreakerState.CLOSED


def _publish(c: httpx.Client, ns: str, level: str) -> httpx.Response:
    data = sample_data()
    data["logging"] = {"level": level}
    return c.put(
        f"/v1/namespaces/{ns}/config",
        headers=auth("publisher"),
        json={"document": data, "message": level},
    )


@pytest.mark.slow
async def test_redis_down_503_fast_and_nothing_half_written(
    own_redis: RedisServer, namespace: str
) -> None:
    app = app_for(own_redis.url, breaker_failures=3, breaker_reset_s=1.0, redis_timeout_s=0.3)
    ns = namespace
    async with client(app) as c:
        r = await c.put(
            f"/v1/namespaces/{ns}/config",
            headers=auth("publisher"),
            json={"document": sample_data(), "message": "v1"},
        )
        assert r.status_code == 201
        own_redis.pause()
        try:
            statuses, latencies = [], []
            for level in ("DEBUG", "ERROR", "WARNING", "CRITICAL", "DEBUG"):
                data = sample_data()
                data["logging"] = {"level": level}
                t0 = time.perf_counter()
                r = await c.put(
                    f"/v1/namespaces/{ns}/config",
                    headers=auth("publisher"),
                    json={"document": data, "message": level},
                )
                latencies.append(time.perf_counter() - t0)
                statuses.append(r.status_code)
                assert r.status_code == 503
                assert r.json()["error"]["code"] == "store_unavailable"
                assert int(r.headers["retry-after"]) >= 1
            # Each of the first three costs one 0.3 s timeout (no audit write after it); the
            # third opens the breaker (3 failures), and answers then come at once.
            assert max(latencies[:3]) < 0.5, latencies
            fast = latencies[3:]
            assert max(fast) < 0.1, latencies
            r = await c.get("/health/ready")
            assert r.status_code == 503
            print(
                f"\n503 latencies with Redis paused: {[f'{x * 1000:.1f}ms' for x in latencies]}",
                file=sys.stderr,
            )
        finally:
            own_redis.resume()

        def consistent() -> bool:
            rc: Any = own_redis.client()
            head = int(rc.get(f"cb:{{{ns}}}:head") or 0)
            record = rc.hgetall(f"cb:{{{ns}}}:v:{head}")
            assert record and record[b"version"] == str(head).encode()
            assert rc.zscore(f"cb:{{{ns}}}:history", head) == head
            return True

        assert consistent()
        # Half-open probe after the reset period: the service recovers on its own.
        await _wait_async(lambda: c.get("/health/ready"), 200, within_s=5)
        before = int(own_redis.client().get(f"cb:{{{ns}}}:head") or 0)
        data = sample_data()
        data["metadata"] = {"after": "recovery"}
        r = await c.put(
            f"/v1/namespaces/{ns}/config",
            headers=auth("publisher"),
            json={"document": data, "message": "after"},
        )
        assert r.status_code == 201 and r.json()["version"] == before + 1
        assert consistent()


@pytest.mark.slow
async def test_first_503_with_redis_paused_costs_one_redis_timeout_not_two(
    own_redis: RedisServer, namespace: str
) -> None:
    """Found by the chaos soak (503s after 2 s with the default 1 s timeout): a request whose
    Redis call timed out then tried to audit to the same Redis and waited a second timeout."""
    timeout_s = 0.3
    app = app_for(own_redis.url, breaker_failures=5, breaker_reset_s=5.0, redis_timeout_s=timeout_s)
    async with client(app) as c:
        ok = await c.put(
            f"/v1/namespaces/{namespace}/config",
            headers=auth("publisher"),
            json={"document": sample_data(), "message": "v1"},
        )
        assert ok.status_code == 201
        own_redis.pause()
        try:
            t0 = time.perf_counter()
            r = await c.put(
                f"/v1/namespaces/{namespace}/config",
                headers=auth("publisher"),
                json={"document": sample_data(), "message": "v2"},
            )
            took = time.perf_counter() - t0
        finally:
            own_redis.resume()
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
        assert took < 1.6 * timeout_s, f"503 after {took:.3f}s"


async def _wait_async(
    fn: Callable[[], Awaitable[httpx.Response]], status: int, within_s: float
) -> None:
    deadline = time.monotonic() + within_s
    while True:
        r = await fn()
        if r.status_code == status:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {r.status_code}")
        await asyncio.sleep(0.1)


@pytest.mark.slow
async def test_redis_stopped_503_under_100ms(own_redis: RedisServer, namespace: str) -> None:
    app = app_for(own_redis.url, breaker_failures=2, breaker_reset_s=1.0, redis_timeout_s=0.5)
    async with client(app) as c:
        own_redis.stop(hard=True)
        latencies = []
        for i in range(6):
            t0 = time.perf_counter()
            r = await c.put(
                f"/v1/namespaces/{namespace}/config",
                headers=auth("publisher"),
                json={"document": sample_data(), "message": str(i)},
            )
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 503 and "retry-after" in r.headers
        assert max(latencies[2:]) < 0.1, latencies
        r = await c.get(f"/v1/namespaces/{namespace}/config", headers=auth("viewer"))
        assert r.status_code == 503
        metrics = (await c.get("/metrics")).text
        assert "configbus_admin_redis_breaker_open 1.0" in metrics
        print(
            f"\n503 latencies with Redis stopped: {[f'{x * 1000:.1f}ms' for x in latencies]}",
            file=sys.stderr,
        )

        # Redis comes back (empty: no persistence). Nothing of the refused publishes is
        # there; once the breaker's probe succeeds, publishing works again.
        own_redis.start()
        rc: Any = own_redis.client()
        assert rc.keys(f"cb:{{{namespace}}}:*") == []
        await _wait_async(lambda: c.get("/health/ready"), 200, within_s=5)
        r = await c.put(
            f"/v1/namespaces/{namespace}/config",
            headers=auth("publisher"),
            json={"document": sample_data(), "message": "back"},
        )
        assert r.status_code == 201 and r.json()["version"] == 1
        assert rc.hget(f"cb:{{{namespace}}}:v:1", "message") == b"back"


async def test_publish_rate_limit_429(redis_server: RedisServer, namespace: str) -> None:
    keys = ("cb:{_}:rl:publish:ada", "cb:{_}:rl:publish:sam")
    redis_server.client().delete(*keys)
    app = app_for(redis_server.url, publish_limit=3, publish_window_s=60)
    async with client(app) as c:
        codes = []
        for level in ("DEBUG", "INFO", "ERROR", "WARNING"):
            data = sample_data()
            data["logging"] = {"level": level}
            r = await c.put(
                f"/v1/namespaces/{namespace}/config", headers=auth("admin"), json={"document": data}
            )
            codes.append(r.status_code)
        assert codes == [201, 201, 201, 429]
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert r.json()["error"]["code"] == "rate_limited"
        # Reads are not limited; other tokens have their own budget.
        assert (
            await c.get(f"/v1/namespaces/{namespace}/config", headers=auth("admin"))
        ).status_code == 200
        r = await c.post(
            f"/v1/namespaces/{namespace}/rollback", headers=auth("sre"), json={"to_version": 1}
        )
        assert r.status_code == 201
        entries = (await c.get(f"/v1/namespaces/{namespace}/audit", headers=auth("viewer"))).json()[
            "entries"
        ]
        assert any(e["outcome"] == "rate_limited" and e["actor"] == "ada" for e in entries)
    redis_server.client().delete(*keys)


@pytest.mark.slow
def test_rate_limit_is_shared_by_two_admin_instances(
    own_redis: RedisServer, namespace: str, tmp_path: Path
) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("# name:role:token\n" + TOKENS_ENV.replace(",", "\n") + "\n")
    env = {
        "CONFIGBUS_SECRET_KEYS": SECRET_KEY,
        "CONFIGBUS_ADMIN_PUBLISH_LIMIT": "4",
        "CONFIGBUS_ADMIN_PUBLISH_WINDOW_S": "60",
    }
    # One instance configured by environment, the other by flags and a tokens file.
    configs = [
        ([], {**env, "CONFIGBUS_ADMIN_TOKENS": TOKENS_ENV, "CONFIGBUS_REDIS_URL": own_redis.url}),
        (["--tokens-file", str(tokens_file), "--redis-url", own_redis.url], env),
    ]
    services, urls = [], []
    try:
        for flags, svc_env in configs:
            port = free_port()
            args = ["admin", "--port", str(port), "--log-level", "debug", *flags]
            svc = Service(
                [sys.executable, "-m", "configbus", *args], env=svc_env, name="admin"
            ).start()
            services.append(svc)
            urls.append(f"http://127.0.0.1:{port}")
        for svc, url in zip(services, urls, strict=True):
            svc.wait_http(url + "/health/ready")
        clients = [httpx.Client(base_url=u, timeout=5) for u in urls]
        codes = []
        for i, level in enumerate(["DEBUG", "INFO", "ERROR", "WARNING", "CRITICAL", "DEBUG"]):
            codes.append(_publish(clients[i % 2], namespace, level))
        assert [r.status_code for r in codes] == [201, 201, 201, 201, 429, 429]
        assert all(int(r.headers["retry-after"]) >= 1 for r in codes[4:])
        # The same processes with Redis gone: 503 over real HTTP, fast once the breaker opens.
        own_redis.stop(hard=True)
        latencies = []
        for _ in range(6):
            t0 = time.perf_counter()
            r = _publish(clients[0], namespace, "INFO")
            latencies.append(time.perf_counter() - t0)
            assert r.status_code == 503 and "retry-after" in r.headers
        assert max(latencies[3:]) < 0.1, latencies
        print(
            f"\n503 latencies over HTTP, Redis stopped: {[f'{x * 1000:.1f}ms' for x in latencies]}",
            file=sys.stderr,
        )
        for c in clients:
            c.close()
    finally:
        for svc in services:
            svc.stop()
        for svc in services:
            assert "Traceback" not in svc.output(), svc.output()
            assert "sk-upstream-secret-a" not in svc.output()
