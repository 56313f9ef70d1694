"""Request ids, config version and overhead headers on every answer; traces of a request
(retries and fallbacks as attempt spans) and of a publish (admin span → replica applies)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette

from admin.app import create_app as admin_app
from configbus.api import Replicas, ReplicaSummary
from configbus.cli.watching import format_status
from configbus.connection import connect
from configbus.settings import BusSettings
from configbus.store import Store
from configbus.tracing import tracer_provider
from proxy.app import create_app as proxy_app
from tests.admin import helpers as admin_helpers
from tests.proxy.helpers import (
    AUTH,
    CHAT,
    SECRET_KEY,
    Mock,
    Replica,
    data_for,
    encode,
    publish,
    running,
)
from tests.support import RedisServer, wait_for

HEADERS = ("x-request-id", "x-configbus-config-version", "x-configbus-overhead-ms")


@pytest.fixture(scope="module")
def mocks() -> Iterator[tuple[Mock, Mock]]:
    a, b = Mock("a"), Mock("b")
    with running(a, b):
        yield a, b


def _exporter() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _bus(redis_url: str, ns: str, rid: str, tmp: Path, key: str = SECRET_KEY) -> BusSettings:
    return BusSettings(
        redis_url=redis_url,
        namespace=ns,
        secret_keys=(key,),
        replica_id=rid,
        snapshot_path=tmp / f"{rid}.json",
    )


def test_tracing_is_off_unless_an_exporter_is_named() -> None:
    assert tracer_provider("x", {}) is None
    assert tracer_provider("x", {"OTEL_TRACES_EXPORTER": "none"}) is None
    provider = tracer_provider("x", {"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None
    provider.shutdown()
    with pytest.raises(ValueError, match="unknown exporter"):
        tracer_provider("x", {"OTEL_TRACES_EXPORTER": "carrier-pigeon"})


def test_every_answer_of_a_real_replica_carries_id_version_and_overhead(
    redis_server: RedisServer, namespace: str, mocks: tuple[Mock, Mock]
) -> None:
    a, b = mocks
    a.control(fail_rate=0.0, latency_ms=50)
    replica = Replica(redis_server.url, namespace, replica_id="obs-r1")
    with running(replica), httpx.Client(timeout=10) as c:
        url = replica.url + "/v1/chat/completions"
        # No config yet: a 503 that still says who it is.
        r = c.post(url, json=CHAT, headers=AUTH)
        assert r.status_code == 503
        assert r.headers["x-configbus-config-version"] == "none" and r.headers["x-request-id"]
        v = publish(redis_server.url, namespace, data_for(a, b))
        wait_for(lambda: replica.version() == v, timeout=10, what="replica applies")

        ok = c.post(url, json=CHAT, headers={**AUTH, "x-request-id": "client-id-1"})
        assert ok.status_code == 200
        assert ok.headers["x-request-id"] == "client-id-1"
        assert ok.headers["x-configbus-config-version"] == str(v)
        # The upstream's 50 ms are not the replica's.
        assert 0 <= float(ok.headers["x-configbus-overhead-ms"]) < 40

        with c.stream("POST", url, json={**CHAT, "stream": True}, headers=AUTH) as s:
            assert s.status_code == 200 and s.headers["content-type"].startswith("text/event")
            assert all(s.headers.get(h) for h in HEADERS)
            assert float(s.headers["x-configbus-overhead-ms"]) < 40
            assert b"[DONE]" in s.read()

        ids = set()
        for bad in (
            c.post(url, json=CHAT, headers={"authorization": "Bearer nope"}),  # 401
            c.post(url, json={**CHAT, "model": "nope"}, headers=AUTH),  # 404
            c.post(url, content=b"{", headers=AUTH),  # 400
            c.post(url, json=CHAT, headers=AUTH),
        ):
            assert all(bad.headers.get(h) for h in HEADERS), bad.headers
            assert bad.headers["x-configbus-config-version"] == str(v)
            ids.add(bad.headers["x-request-id"])
        assert len(ids) == 4  # generated ids are distinct
        # A client's traceparent travels upstream as it came (tracing off in the replica).
        tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        c.post(url, json=CHAT, headers={**AUTH, "traceparent": tp})
        assert a.stats()["last_headers"].get("traceparent") == tp
    a.control(latency_ms=0)


def _client(app: Starlette, state: Mapping[str, Any] | None) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=admin_helpers._WithState(app, dict(state or {})))
    return httpx.AsyncClient(transport=transport, base_url="http://replica")


def _attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


async def test_a_retried_then_fallen_back_request_is_one_trace_of_three_attempts(
    redis_server: RedisServer, namespace: str, mocks: tuple[Mock, Mock], tmp_path: Path
) -> None:
    a, b = mocks
    a.control(fail_rate=1.0, status=500, latency_ms=0)
    provider, exporter = _exporter()
    redis = connect(redis_server.url)
    try:
        v = (await Store(redis, namespace).publish(encode(data_for(a, b)), author="t")).version
    finally:
        await redis.aclose()
    app = proxy_app(_bus(redis_server.url, namespace, "trace-r1", tmp_path), tracing=provider)
    try:
        async with app.router.lifespan_context(app) as state, _client(app, state) as c:
            assert state is not None
            async with asyncio.timeout(10):
                await state["watcher"].wait_for(lambda cur: cur is not None and cur.version == v)
            tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            r = await c.post("/v1/chat/completions", json=CHAT, headers={**AUTH, "traceparent": tp})
            assert r.status_code == 200 and r.headers["x-configbus-provider"] == "upstream-b"
            rid = r.headers["x-request-id"]
    finally:
        a.control(fail_rate=0.0)
    spans = [s for s in exporter.get_finished_spans() if s.name != "configbus.apply"]
    roots = [s for s in spans if s.name == "chat.completions"]
    assert len(roots) == 1
    root = roots[0]
    assert root.context is not None and root.parent is not None
    assert f"{root.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    attrs = _attrs(root)
    assert attrs["configbus.config_version"] == v and attrs["configbus.request_id"] == rid
    assert attrs["configbus.client"] == "team-a" and attrs["gen_ai.request.model"] == "m"
    assert attrs["configbus.provider"] == "upstream-b"
    assert all(AUTH["authorization"][7:] not in str(x) for s in spans for x in _attrs(s).values())
    attempts = sorted(
        (s for s in spans if s.name.startswith("upstream ")), key=lambda s: s.start_time or 0
    )
    assert [
        (_attrs(s)["configbus.provider"], _attrs(s)["configbus.outcome"]) for s in attempts
    ] == [
        ("upstream-a", "500"),
        ("upstream-a", "500"),
        ("upstream-b", "ok"),
    ]
    assert [_attrs(s)["configbus.deployment"] for s in attempts] == ["mock-a", "mock-a", "mock-b"]
    assert all(s.parent is not None and s.parent.span_id == root.context.span_id for s in attempts)
    # The upstream saw the last attempt's span as its parent.
    last = attempts[-1].context
    assert last is not None
    assert b.stats()["last_headers"]["traceparent"] == (
        f"00-{last.trace_id:032x}-{last.span_id:016x}-01"
    )


async def test_a_publish_and_each_replica_apply_share_one_trace(
    redis_server: RedisServer, namespace: str, mocks: tuple[Mock, Mock], tmp_path: Path
) -> None:
    a, b = mocks
    provider, exporter = _exporter()
    admin = admin_app(admin_helpers.settings(redis_server.url, namespace), tracing=provider)
    key = admin_helpers.SECRET_KEY
    replicas = [
        proxy_app(_bus(redis_server.url, namespace, f"apply-r{i}", tmp_path, key), tracing=provider)
        for i in (1, 2)
    ]
    async with (
        admin_helpers.client(admin) as c,
        replicas[0].router.lifespan_context(replicas[0]) as s1,
        replicas[1].router.lifespan_context(replicas[1]) as s2,
    ):
        r = await c.put(
            f"/v1/namespaces/{namespace}/config",
            headers=admin_helpers.auth("publisher"),
            json={"document": data_for(a, b), "message": "traced"},
        )
        assert r.status_code == 201, r.text
        v = r.json()["version"]
        async with asyncio.timeout(10):
            for st in (s1, s2):
                assert st is not None
                await st["watcher"].wait_for(lambda cur: cur is not None and cur.version == v)
        for st in (s1, s2):
            assert st is not None
            # Propagation: publish → swap, as a histogram and in the replica's status.
            took = st["watcher"].last_propagation_s
            assert took is not None and 0 <= took < 10
            assert st["watcher"].status().propagation_s == took
            count = st["registry"].get_sample_value(
                "configbus_propagation_seconds_count", {"namespace": namespace}
            )
            assert count is not None and count >= 1

        # The admin's summary names the slowest replica of this publish (from heartbeats).
        async def slowest() -> Any:
            got = await c.get(
                f"/v1/namespaces/{namespace}/replicas", headers=admin_helpers.auth("viewer")
            )
            return got.json()["summary"].get("slowest_replica")

        name = None
        for _ in range(200):  # bounded: 10 s
            name = await slowest()
            if name is not None:
                break
            await asyncio.sleep(0.05)
        assert name in ("apply-r1", "apply-r2")
    spans = exporter.get_finished_spans()
    [pub] = [s for s in spans if s.name == "configbus.publish"]
    applies = [s for s in spans if s.name == "configbus.apply"]
    assert pub.context is not None
    assert sorted(str(_attrs(s)["configbus.replica_id"]) for s in applies) == [
        "apply-r1",
        "apply-r2",
    ]
    for s in applies:
        assert s.context is not None and s.context.trace_id == pub.context.trace_id
        assert s.parent is not None and s.parent.span_id == pub.context.span_id
        assert _attrs(s)["configbus.config_version"] == v


def test_status_names_the_slowest_replica_of_the_last_publish() -> None:
    summary = ReplicaSummary(
        head=7,
        epoch="e",
        total=2,
        alive=2,
        dead=0,
        rejected=0,
        per_version={"7": 2},
        all_on_head=True,
        slowest_replica="r2",
        slowest_propagation_s=0.0123,
    )
    text = format_status(Replicas(summary=summary, replicas=[]))
    assert "propagation of version 7: slowest replica r2 (12.3 ms after the publish)" in text


def test_json_logs_name_the_request_version_and_trace(
    redis_server: RedisServer, namespace: str, mocks: tuple[Mock, Mock]
) -> None:
    a, b = mocks
    replica = Replica(
        redis_server.url,
        namespace,
        replica_id="obs-json",
        env={"CONFIGBUS_LOG_FORMAT": "json", "OTEL_TRACES_EXPORTER": "console"},
    )
    v = publish(redis_server.url, namespace, data_for(a, b))
    a.control(fail_rate=1.0, status=500)
    try:
        with running(replica), httpx.Client(timeout=10) as c:
            wait_for(lambda: replica.version() == v, timeout=10, what="replica applies")
            # Two requests, two failed attempts each on upstream-a: its breaker opens (3
            # failures) during the second, which logs it.
            for i in range(2):
                r = c.post(
                    replica.url + "/v1/chat/completions",
                    json=CHAT,
                    headers={**AUTH, "x-request-id": f"json-{i}"},
                )
                assert r.status_code == 200
            text = replica.service.log.read_text()
    finally:
        a.control(fail_rate=0.0)
    lines = [json.loads(x) for x in text.splitlines() if x.startswith('{"time"')]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    opened = [x for x in lines if "circuit open" in x["message"]]
    assert opened, text[-2000:]
    assert opened[0]["request_id"] == "json-1" and opened[0]["config_version"] == str(v)
    assert len(opened[0]["trace_id"]) == 32


async def test_a_rollout_step_and_the_applies_it_causes_share_one_trace(
    redis_server: RedisServer, namespace: str, mocks: tuple[Mock, Mock], tmp_path: Path
) -> None:
    a, b = mocks
    provider, exporter = _exporter()
    admin = admin_app(admin_helpers.settings(redis_server.url, namespace), tracing=provider)
    bus = _bus(redis_server.url, namespace, "step-r1", tmp_path, admin_helpers.SECRET_KEY)
    replica = proxy_app(bus, tracing=provider)
    base = f"/v1/namespaces/{namespace}"
    async with admin_helpers.client(admin) as c, replica.router.lifespan_context(replica) as st:
        assert st is not None
        watcher = st["watcher"]
        r = await c.put(
            base + "/config",
            headers=admin_helpers.auth("publisher"),
            json={"document": data_for(a, b), "message": "first"},
        )
        assert r.status_code == 201, r.text
        changed = {**data_for(a, b), "metadata": {"step": "traced"}}
        r = await c.post(
            base + "/rollouts",
            headers=admin_helpers.auth("publisher"),
            json={"document": changed, "stages": [{"selector": "tier=canary", "bake_s": 600}]},
        )
        assert r.status_code == 201, r.text
        v = r.json()["version"]
        r = await c.post(base + "/rollout/promote", headers=admin_helpers.auth("admin"), json={})
        assert r.status_code == 200, r.text
        async with asyncio.timeout(10):
            await watcher.wait_for(lambda cur: cur is not None and cur.version == v)
    spans = exporter.get_finished_spans()
    [step] = [s for s in spans if s.name == "configbus.rollout_promote"]
    assert step.context is not None and _attrs(step)["configbus.config_version"] == v
    [apply] = [
        s
        for s in spans
        if s.name == "configbus.apply" and _attrs(s)["configbus.config_version"] == v
    ]
    assert apply.context is not None and apply.context.trace_id == step.context.trace_id
    assert apply.parent is not None and apply.parent.span_id == step.context.span_id


async def test_a_request_span_says_whether_the_cache_answered(
    redis_server: RedisServer, namespace: str, mocks: tuple[Mock, Mock], tmp_path: Path
) -> None:
    a, b = mocks
    provider, exporter = _exporter()
    data = data_for(a, b)
    data["models"][0]["cache"] = {"ttl_s": 60}
    redis = connect(redis_server.url)
    try:
        v = (await Store(redis, namespace).publish(encode(data), author="t")).version
    finally:
        await redis.aclose()
    app = proxy_app(_bus(redis_server.url, namespace, "cache-r1", tmp_path), tracing=provider)
    async with app.router.lifespan_context(app) as state, _client(app, state) as c:
        assert state is not None
        async with asyncio.timeout(10):
            await state["watcher"].wait_for(lambda cur: cur is not None and cur.version == v)
        body = {**CHAT, "messages": [{"role": "user", "content": f"cache {namespace}"}]}
        seen = []
        for _ in range(40):  # the miss's answer is stored in the background: poll for a hit
            r = await c.post("/v1/chat/completions", json=body, headers=AUTH)
            seen.append(r.headers["x-configbus-cache"])
            if seen[-1] == "hit":
                break
            await asyncio.sleep(0.05)
    assert seen[0] == "miss" and seen[-1] == "hit"
    roots = [s for s in exporter.get_finished_spans() if s.name == "chat.completions"]
    assert [_attrs(s)["configbus.cache"] for s in roots] == seen
