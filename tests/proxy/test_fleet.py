"""Replica processes against a real redis-server and mock upstream processes."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.proxy.helpers import (
    AUTH,
    CHAT,
    Mock,
    Replica,
    chat,
    data_for,
    publish,
    running,
    with_client,
)
from tests.support import RedisServer, free_port, wait_for

pytestmark = pytest.mark.slow


class Fleet:
    def __init__(self, redis: RedisServer, namespace: str) -> None:
        self.redis_url = redis.url
        self.namespace = namespace
        self.a, self.b = Mock("A"), Mock("B")
        self.replicas = [Replica(redis.url, namespace, replica_id=f"r{i}") for i in range(3)]

    def publish(self, data: dict[str, Any]) -> int:
        v = publish(self.redis_url, self.namespace, data)
        wait_for(
            lambda: all(r.version() == v for r in self.replicas),
            timeout=5,
            what=f"every replica on version {v}",
        )
        return v

    def reset(self) -> None:
        for m in (self.a, self.b):
            m.control(fail_rate=0.0, status=500, latency_ms=0, stream_chunks=3, chunk_delay_ms=0)


@pytest.fixture(scope="module")
def fleet(redis_server: RedisServer) -> Iterator[Fleet]:
    f = Fleet(redis_server, "fleet")
    with running(f.a, f.b, *f.replicas):
        yield f


@pytest.fixture
def http(fleet: Fleet) -> Iterator[httpx.Client]:
    fleet.reset()
    with httpx.Client(timeout=10) as c:
        yield c


def served_by(resp: httpx.Response) -> str:
    assert resp.status_code == 200, resp.text
    content: str = resp.json()["choices"][0]["message"]["content"]
    return content.removeprefix("served by ")


def test_switch_upstream_on_every_replica_without_failures(
    fleet: Fleet, http: httpx.Client
) -> None:
    fleet.publish(data_for(fleet.a, fleet.b, model_to="a"))
    for r in fleet.replicas:
        assert served_by(chat(http, r.url)) == "A"

    failures: list[str] = []
    sent = [0]
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(timeout=5) as c:
            while not stop.is_set():
                for r in fleet.replicas:
                    try:
                        resp = chat(c, r.url)
                        if resp.status_code != 200:
                            failures.append(f"{r.url}: {resp.status_code} {resp.text}")
                    except httpx.HTTPError as exc:
                        failures.append(f"{r.url}: {exc!r}")
                    sent[0] += 1

    threads = [threading.Thread(target=loop) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sent[0] > 30, timeout=5)
        t0 = time.monotonic()
        publish(fleet.redis_url, fleet.namespace, data_for(fleet.a, fleet.b, model_to="b"))
        for r in fleet.replicas:

            def on_b(url: str = r.url) -> bool:
                return served_by(chat(http, url)) == "B"

            wait_for(on_b, timeout=1.0, interval=0.01, what=f"{r.url} serving from B")
        switched = time.monotonic() - t0
        before = sent[0]
        wait_for(lambda: sent[0] > before + 30, timeout=5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert switched < 1.0
    assert failures == []
    for r in fleet.replicas:
        assert served_by(chat(http, r.url)) == "B"


def test_stream_started_before_reload_finishes_on_the_old_upstream(
    fleet: Fleet, http: httpx.Client
) -> None:
    fleet.publish(data_for(fleet.a, fleet.b, model_to="a"))
    fleet.a.control(stream_chunks=6, chunk_delay_ms=100)
    replica = fleet.replicas[0]
    # The new version switches `m` to B *and* changes provider A, so A's pool is retired
    # while the stream still uses it.
    new = data_for(fleet.a, fleet.b, model_to="b")
    new["providers"][0]["timeout_s"] = 9
    closing = "closing pool of provider upstream-a"
    closed_before = replica.service.output().count(closing)
    text = []
    with http.stream(
        "POST", replica.url + "/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["x-configbus-provider"] == "upstream-a"
        lines = resp.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        text.append(first)
        v2 = fleet.publish(new)
        after = chat(http, replica.url)
        assert served_by(after) == "B"
        assert after.headers["x-configbus-version"] == str(v2)
        text.extend(line for line in lines if line.startswith("data: "))
    assert text[-1] == "data: [DONE]"
    import json

    content = "".join(
        json.loads(t[6:])["choices"][0]["delta"].get("content", "") for t in text[:-1]
    )
    assert content == "served by A"
    status = http.get(replica.url + "/status").json()
    assert status["version"] == v2
    # The replaced pool of A closed once the stream, its last user, was done.
    wait_for(
        lambda: replica.service.output().count(closing) > closed_before,
        timeout=5,
        what="old pool of upstream-a closed",
    )


def test_breaker_opens_falls_back_and_closes_after_a_half_open_probe(
    fleet: Fleet, http: httpx.Client
) -> None:
    data = data_for(fleet.a, fleet.b, model_to="a")
    data["providers"][0]["max_retries"] = 0
    data["providers"][0]["circuit_breaker"] = {"failure_threshold": 3, "recovery_timeout_s": 0.5}
    fleet.publish(data)
    replica = fleet.replicas[0]
    fleet.a.control(fail_rate=1.0, status=500)
    before = fleet.a.stats()["requests"]
    for _ in range(8):
        resp = chat(http, replica.url)
        assert served_by(resp) == "B"
        assert resp.headers["x-configbus-provider"] == "upstream-b"
    assert fleet.a.stats()["requests"] - before == 3  # then the breaker kept A out
    status = http.get(replica.url + "/status").json()
    assert status["providers"]["upstream-a"]["breaker"] in ("open", "half_open")
    metrics = http.get(replica.url + "/metrics").text
    assert 'configbus_proxy_breaker_state{provider="upstream-a"} 2.0' in metrics

    fleet.a.control(fail_rate=0.0)
    wait_for(
        lambda: served_by(chat(http, replica.url)) == "A",
        timeout=5,
        interval=0.05,
        what="A back after a half-open probe",
    )
    assert (
        http.get(replica.url + "/status").json()["providers"]["upstream-a"]["breaker"] == "closed"
    )
    assert served_by(chat(http, replica.url)) == "A"


def test_client_rpm_is_enforced_across_replicas(fleet: Fleet, http: httpx.Client) -> None:
    key = f"sk-limited-{time.monotonic_ns()}"
    data = with_client(
        data_for(fleet.a, fleet.b), f"limited-{time.monotonic_ns()}", key, rate_limit={"rpm": 5}
    )
    fleet.publish(data)
    codes, after = [], []
    for i in range(12):
        resp = chat(http, fleet.replicas[i % 2].url, key=key)
        codes.append(resp.status_code)
        if resp.status_code == 429:
            after.append(resp)
    assert codes.count(200) == 5
    assert codes[:5] == [200] * 5 and set(codes[5:]) == {429}
    for resp in after:
        assert int(resp.headers["retry-after"]) >= 1
        assert resp.headers["x-ratelimit-limit"] == "5"
        assert resp.headers["x-ratelimit-remaining"] == "0"
        assert resp.json()["error"]["type"] == "rate_limit_error"


def test_removed_client_key_gets_401_everywhere(fleet: Fleet, http: httpx.Client) -> None:
    base = data_for(fleet.a, fleet.b)
    fleet.publish(with_client(base, "temp", "sk-temp"))
    for r in fleet.replicas:
        assert chat(http, r.url, key="sk-temp").status_code == 200
    fleet.publish(copy.deepcopy(base))
    for r in fleet.replicas:
        resp = chat(http, r.url, key="sk-temp")
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "invalid_api_key"


def test_error_answers_have_openai_shape(fleet: Fleet, http: httpx.Client) -> None:
    data = with_client(data_for(fleet.a, fleet.b), "narrow", "sk-narrow", models=["m-backup"])
    fleet.publish(data)
    url = fleet.replicas[1].url + "/v1/chat/completions"
    cases = [
        (http.post(url, json=CHAT), 401),
        (http.post(url, json=CHAT, headers={"authorization": "Bearer nope"}), 401),
        (http.post(url, content=b"{not json", headers=AUTH), 400),
        (http.post(url, json={"model": "m"}, headers=AUTH), 400),
        (http.post(url, json={**CHAT, "model": "nope"}, headers=AUTH), 404),
        (http.post(url, json=CHAT, headers={"authorization": "Bearer sk-narrow"}), 403),
        (http.post(url, json={**CHAT, "pad": "x" * (5 * 1024 * 1024)}, headers=AUTH), 413),
    ]
    for resp, status in cases:
        assert resp.status_code == status, resp.text
        err = resp.json()["error"]
        assert set(err) == {"message", "type", "code"}
    fleet.b.control(fail_rate=1.0, status=503)
    resp = http.post(url, json={**CHAT, "model": "m-backup"}, headers=AUTH)
    assert resp.status_code == 502
    assert resp.json()["error"]["code"] == "bad_gateway"
    # The upstream refusing the gateway's key is the gateway's failure, not the client's:
    # a 502 naming the provider, never the upstream's body (which may quote the key).
    fleet.b.control(fail_rate=1.0, status=401)
    resp = http.post(url, json={**CHAT, "model": "m-backup"}, headers=AUTH)
    assert resp.status_code == 502, resp.text
    assert resp.json()["error"]["message"] == (
        "provider upstream-b refused the gateway's credentials (401)"
    )
    assert "mock failure" not in resp.text

    slow = copy.deepcopy(data)
    slow["providers"][1].update(timeout_s=0.2, max_retries=1)
    fleet.publish(slow)
    fleet.b.control(fail_rate=0.0, latency_ms=1000)
    before = fleet.b.stats()["requests"]
    resp = http.post(url, json={**CHAT, "model": "m-backup"}, headers=AUTH)
    assert resp.status_code == 504
    assert resp.json()["error"] == {
        "message": "provider upstream-b timed out",
        "type": "timeout_error",
        "code": "upstream_timeout",
    }
    assert fleet.b.stats()["requests"] - before == 2  # the first try and one retry


def test_models_status_and_readiness(fleet: Fleet, http: httpx.Client) -> None:
    v = fleet.publish(with_client(data_for(fleet.a, fleet.b), "narrow2", "sk-n2", models=["m"]))
    r = fleet.replicas[2]
    assert http.get(r.url + "/health/ready").status_code == 200
    ids = [m["id"] for m in http.get(r.url + "/v1/models", headers=AUTH).json()["data"]]
    assert ids == ["m", "m-backup"]
    ids = [
        m["id"]
        for m in http.get(r.url + "/v1/models", headers={"authorization": "Bearer sk-n2"}).json()[
            "data"
        ]
    ]
    assert ids == ["m"]
    st = http.get(r.url + "/status").json()
    assert st["replica_id"] == "r2" and st["namespace"] == "fleet" and st["version"] == v
    assert st["stale"] is False and st["epoch"] and st["applied_at"] > 0
    metrics = http.get(r.url + "/metrics").text
    assert f'configbus_applied_version{{namespace="fleet"}} {float(v)}' in metrics
    assert "configbus_proxy_requests_total" in metrics


def test_anthropic_provider_stream_and_non_stream(fleet: Fleet, http: httpx.Client) -> None:
    data = data_for(fleet.a, fleet.b)
    data["providers"].append(
        {
            "name": "claude",
            "type": "anthropic",
            "base_url": fleet.a.url + "/v1",
            "api_key_env": "UPSTREAM_B_KEY",
        }
    )
    data["models"].append(
        {
            "name": "c",
            "deployments": [{"provider": "claude", "model": "claude-mock"}],
            "params": {"max_tokens": 77},
        }
    )
    fleet.publish(data)
    url = fleet.replicas[0].url
    resp = http.post(
        url + "/v1/chat/completions",
        headers=AUTH,
        json={
            "model": "c",
            "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
        },
    )
    assert served_by(resp) == "A"
    body = resp.json()
    assert body["object"] == "chat.completion" and body["model"] == "claude-mock"
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    seen = fleet.a.stats()
    assert seen["last_request"]["system"] == "sys"
    assert seen["last_request"]["max_tokens"] == 77
    assert seen["last_headers"]["x-api-key"] == "sk-upstream-b"
    assert seen["last_headers"]["content-type"] == "application/json"
    resp = http.post(
        url + "/v1/chat/completions",
        headers=AUTH,
        json={"model": "c", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
    )
    import json

    datas = [line[6:] for line in resp.text.split("\n") if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "served by A"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_dead_upstream_retries_then_falls_back_and_provider_rpm_spills_over(
    fleet: Fleet, http: httpx.Client
) -> None:
    data = data_for(fleet.a, fleet.b)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    data["providers"].append({"name": "dead", "base_url": dead, "max_retries": 2})
    data["providers"][1]["rate_limit"] = {"rpm": 2}  # upstream-b
    data["models"].append(
        {
            "name": "d",
            "strategy": "ordered",
            "deployments": [
                {"provider": "dead", "model": "x"},
                {"provider": "upstream-b", "model": "mock-b"},
                {"provider": "upstream-a", "model": "mock-a"},
            ],
        }
    )
    fleet.publish(data)
    url = fleet.replicas[2].url
    got = [served_by(chat(http, url, model="d")) for _ in range(4)]
    assert got == ["B", "B", "A", "A"]  # B's own rpm of 2, then the next deployment
    metrics = http.get(url + "/metrics").text
    assert 'configbus_proxy_upstream_attempts_total{outcome="error",provider="dead"}' in metrics
    resp = chat(http, url, model="m-backup")  # only B, which is at its limit
    assert resp.status_code == 429
    # The wait for B's next token (rpm 2: up to 30 s), no longer a fixed "1".
    assert 1 <= int(resp.headers["retry-after"]) <= 30
    assert resp.json()["error"]["param"] == "provider"


def test_params_are_defaults_under_the_request_and_model_is_the_deployments(
    fleet: Fleet, http: httpx.Client
) -> None:
    fleet.publish(data_for(fleet.a, fleet.b))  # model m has params {"temperature": 0.2}
    url = fleet.replicas[0].url
    assert served_by(chat(http, url)) == "A"
    seen = fleet.a.stats()["last_request"]
    assert seen["model"] == "mock-a" and seen["temperature"] == 0.2
    assert fleet.a.stats()["last_headers"]["authorization"] == "Bearer sk-upstream-secret-a"
    assert served_by(chat(http, url, temperature=0.9, top_p=0.5)) == "A"
    seen = fleet.a.stats()["last_request"]
    assert (seen["temperature"], seen["top_p"]) == (0.9, 0.5)


def test_pool_replaced_at_every_reload_under_load_loses_no_request(
    fleet: Fleet, http: httpx.Client
) -> None:
    base = data_for(fleet.a, fleet.b)
    fleet.publish(base)
    targets = [r.url for r in fleet.replicas[:2]]
    closing = "closing pool of provider upstream-a"
    closed_before = fleet.replicas[0].service.output().count(closing)
    failures: list[str] = []
    done = [0]
    stop = threading.Event()

    def loop(stream: bool) -> None:
        with httpx.Client(timeout=5) as c:
            while not stop.is_set():
                for url in targets:
                    try:
                        resp = chat(c, url, stream=stream)
                        ok = resp.status_code == 200 and (
                            resp.text.rstrip().endswith("data: [DONE]")
                            if stream
                            else served_by(resp) == "A"
                        )
                        if not ok:
                            failures.append(f"{url}: {resp.status_code} {resp.text[:200]}")
                    except (httpx.HTTPError, AssertionError) as exc:
                        failures.append(f"{url}: {exc!r}")
                    done[0] += 1

    threads = [threading.Thread(target=loop, args=(s,)) for s in (False, True, False)]
    for t in threads:
        t.start()
    try:
        for i in range(30):
            data = copy.deepcopy(base)
            # A provider setting changes every time: every version gets a new pool for A.
            data["providers"][0]["timeout_s"] = 10 + i % 2 + i / 1000
            publish(fleet.redis_url, fleet.namespace, data)
            time.sleep(0.05)  # pacing of the publisher, not a sync point
        v = publish(fleet.redis_url, fleet.namespace, base)
        wait_for(lambda: all(r.version() == v for r in fleet.replicas), timeout=5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert done[0] > 50
    assert failures == []
    closed = fleet.replicas[0].service.output().count(closing) - closed_before
    assert closed >= 10, closed  # pools really were replaced (bursts may coalesce)
