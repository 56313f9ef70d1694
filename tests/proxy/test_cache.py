"""The response cache: exact-match answers shared by the fleet through Redis, per model."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client import CollectorRegistry
from redis.exceptions import ConnectionError as RedisConnectionError

from configbus.validation import to_document
from proxy.cache import (
    ModelCache,
    ResponseCache,
    StreamRecorder,
    bypass,
    model_cache,
    replay,
    request_key,
)
from tests.proxy.helpers import data_for
from tests.proxy.solo import Solo, http, solo
from tests.support import RedisServer, wait_for

__all__ = ["http"]  # a fixture: imported for pytest

HI = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


# -- units ------------------------------------------------------------------------------


def cached_doc(**cache: Any) -> dict[str, Any]:
    data = data_for_urls()
    data["models"][0]["cache"] = cache or {"ttl_s": 60}
    return data


def data_for_urls() -> dict[str, Any]:
    from configbus.testing import sample_data

    return sample_data()


def mc_of(data: dict[str, Any], name: str = "m") -> ModelCache:
    mc = model_cache(to_document(data), name)
    assert mc is not None
    return mc


def test_key_ignores_stream_and_key_order_but_not_content() -> None:
    mc = mc_of(cached_doc())
    base = request_key(mc, "chat", HI)
    assert request_key(mc, "chat", {"messages": HI["messages"], "model": "m"}) == base
    assert request_key(mc, "chat", {**HI, "stream": True,
                                    "stream_options": {"include_usage": True}}) == base  # fmt: skip
    assert request_key(mc, "chat", {**HI, "temperature": 0.5}) != base
    assert request_key(mc, "embeddings", HI) != base


def test_routing_changes_the_tag_and_other_changes_do_not() -> None:
    data = cached_doc()
    tag = mc_of(data).tag
    other = cached_doc()
    other["metadata"] = {"owner": "someone else"}
    other["clients"][0]["rate_limit"] = {"rpm": 5}
    assert mc_of(other).tag == tag
    for change in (
        lambda d: d["models"][0].update(params={"temperature": 0.9}),
        lambda d: d["models"][0]["deployments"][0].update(model="other"),
        lambda d: d["providers"][0].update(base_url="http://127.0.0.1:9999/v1"),
        lambda d: d["models"][1]["deployments"][0].update(model="fallback-changed"),
    ):
        changed = cached_doc()
        change(changed)
        assert mc_of(changed).tag != tag


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, (False, False)), (b"no-cache", (True, False)), (b"No-Store", (True, True)),
     (b"max-age=0, no-cache", (True, False)), (b"max-age=60", (False, False))],
)  # fmt: skip
def test_bypass(header: bytes | None, expected: tuple[bool, bool]) -> None:
    assert bypass(header) == expected


def test_replay_builds_a_stream_of_the_completion() -> None:
    done = {
        "id": "c1", "object": "chat.completion", "created": 7, "model": "x",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "hello",
            "tool_calls": [{"id": "t1", "type": "function",
                            "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }  # fmt: skip
    out = replay(msgspec.json.encode(done), include_usage=True)
    events = [e.removeprefix(b"data: ") for e in out.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["id"] for c in chunks} == {"c1"}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content", "") for d in deltas) == "hello"
    assert deltas[0]["role"] == "assistant"
    assert [d["tool_calls"][0]["function"]["name"] for d in deltas if "tool_calls" in d] == ["f"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1] == {**chunks[-1], "choices": [], "usage": done["usage"]}
    no_usage = replay(msgspec.json.encode(done), include_usage=False)
    assert b'"usage"' not in no_usage


def test_a_stream_is_rebuilt_into_the_answer_it_spells() -> None:
    done = {
        "id": "c9", "object": "chat.completion", "created": 5, "model": "x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello world",
                     "tool_calls": [{"id": "t", "type": "function",
                                     "function": {"name": "f", "arguments": '{"a": 1}'}}]},
                     "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }  # fmt: skip
    stream = replay(msgspec.json.encode(done), include_usage=True)
    rec = StreamRecorder(10_000)
    for i in range(0, len(stream), 7):  # events split anywhere
        rec.feed(stream[i : i + 7])
    body = rec.completion()
    assert body is not None and json.loads(body) == done
    # Split tool-call arguments are joined.
    parts = [
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "t", "type": "function",
                                               "function": {"name": "f", "arguments": '{"a"'}}]}},
        {"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]},
         "finish_reason": "tool_calls"},
    ]  # fmt: skip
    rec = StreamRecorder(10_000)
    for c in parts:
        rec.feed(b"data: " + msgspec.json.encode({"id": "x", "choices": [c]}) + b"\n\n")
    rec.feed(b'data: {"id": "x", "choices": [], "usage": {"total_tokens": 1}}\n\ndata: [DONE]\n\n')
    got = json.loads(rec.completion() or b"null")
    assert got["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    assert got["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    "tail",
    [
        b'data: {"error": {"message": "broke"}}\n\ndata: [DONE]\n\n',  # an in-band error
        b"data: [DONE]\n\n",  # no usage chunk
        b"data: not json\n\n",
    ],
)
def test_a_stream_that_cannot_be_stored(tail: bytes) -> None:
    rec = StreamRecorder(10_000)
    rec.feed(b'data: {"id": "x", "choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n')
    rec.feed(tail)
    assert rec.completion() is None


def test_a_stream_over_the_limit_is_not_recorded() -> None:
    rec = StreamRecorder(100)
    for _ in range(10):
        rec.feed(b'data: {"id": "x", "choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n')
    rec.feed(b'data: {"id": "x", "choices": [], "usage": {"total_tokens": 1}}\n\n')
    assert rec.failed and rec.completion() is None


class BrokenStore:
    def __init__(self) -> None:
        self.calls = 0

    async def get(self, digest: str) -> bytes | None:
        self.calls += 1
        raise RedisConnectionError("down")

    async def put(self, digest: str, value: bytes, ttl_s: int) -> None:
        raise RedisConnectionError("down")


def test_redis_trouble_is_a_miss_and_skips_lookups_for_a_while() -> None:
    store = BrokenStore()
    registry = CollectorRegistry()
    cache = ResponseCache(store, registry)  # type: ignore[arg-type]
    mc = ModelCache("m", b"t", 60, 1000)

    async def go() -> list[Any]:
        out = [await cache.get(mc, "k") for _ in range(3)]
        cache.put(mc, "k", b"p", b"body")
        await cache.aclose()
        return out

    assert asyncio.run(go()) == [None, None, None]
    assert store.calls == 1  # the breaker skipped the next lookups
    assert (
        registry.get_sample_value("configbus_proxy_cache_total", {"model": "m", "outcome": "error"})
        == 3
    )
    assert (
        registry.get_sample_value(
            "configbus_proxy_cache_total", {"model": "m", "outcome": "store_error"}
        )
        == 1
    )


# -- a replica against the mock ---------------------------------------------------------


@pytest.fixture(scope="module")
def env(redis_server: RedisServer) -> Iterator[Solo]:
    with solo(redis_server, "cache") as s:
        yield s


def publish_cached(env: Solo, **cache: Any) -> dict[str, Any]:
    data = data_for(env.a, env.b)
    data["models"][0]["cache"] = cache or {"ttl_s": 60}
    data["metadata"] = {"run": str(id(cache))}  # a fresh version, same routing
    env.publish(data)
    return data


def ask(env: Solo, http: httpx.Client, body: dict[str, Any] | None = None,
        **headers: str) -> httpx.Response:  # fmt: skip
    r = env.post(http, "/v1/chat/completions", body or HI, **headers)
    assert r.status_code == 200, r.text
    return r


def until_hit(env: Solo, http: httpx.Client, body: dict[str, Any] | None = None) -> httpx.Response:
    """The write is in the background: poll until the answer is there."""
    return wait_for(
        lambda: (r := ask(env, http, body)).headers["x-configbus-cache"] == "hit" and r,
        timeout=5,
        what="a cache hit",
    )


def upstream_calls(env: Solo) -> int:
    return int(env.a.stats()["requests"])


@pytest.mark.slow
def test_hit_is_byte_identical_and_asks_no_upstream(env: Solo, http: httpx.Client) -> None:
    publish_cached(env)
    body = {**HI, "messages": [{"role": "user", "content": "byte-identical"}]}
    first = ask(env, http, body)
    assert first.headers["x-configbus-cache"] == "miss"
    hit = until_hit(env, http, body)
    assert hit.content == first.content
    assert hit.headers["x-configbus-provider"] == "upstream-a"
    assert hit.headers["content-type"] == "application/json"
    before = upstream_calls(env)
    for _ in range(3):
        again = ask(env, http, body)
        assert again.headers["x-configbus-cache"] == "hit" and again.content == first.content
    assert upstream_calls(env) == before
    metrics = http.get(env.url + "/metrics").text
    assert 'configbus_proxy_cache_total{model="m",outcome="hit"}' in metrics
    assert 'configbus_proxy_requests_total{model="m",provider="cache",status="200"}' in metrics
    # A model without a cache says nothing about one.
    plain = ask(env, http, {**body, "model": "m-backup"})
    assert "x-configbus-cache" not in plain.headers


@pytest.mark.slow
def test_ttl(env: Solo, http: httpx.Client) -> None:
    publish_cached(env, ttl_s=1)
    body = {**HI, "messages": [{"role": "user", "content": "short-lived"}]}
    first = ask(env, http, body)
    assert until_hit(env, http, body).content == first.content
    expired = wait_for(
        lambda: (r := ask(env, http, body)).headers["x-configbus-cache"] == "miss" and r,
        timeout=5,
        what="the entry to expire",
    )
    assert expired.content != first.content


@pytest.mark.slow
def test_bypass_headers(env: Solo, http: httpx.Client) -> None:
    publish_cached(env)
    body = {**HI, "messages": [{"role": "user", "content": "bypass"}]}
    stored = until_hit(env, http, body)
    # no-store: asks upstream, keeps what was stored.
    before = upstream_calls(env)
    fresh = ask(env, http, body, **{"cache-control": "no-store"})
    assert fresh.headers["x-configbus-cache"] == "miss" and fresh.content != stored.content
    assert upstream_calls(env) == before + 1
    assert ask(env, http, body).content == stored.content
    # no-cache: asks upstream, and the fresh answer replaces the stored one.
    newer = ask(env, http, body, **{"cache-control": "no-cache"})
    assert newer.headers["x-configbus-cache"] == "miss" and newer.content != stored.content
    assert upstream_calls(env) == before + 2
    wait_for(lambda: ask(env, http, body).content == newer.content, timeout=5,
             what="the no-cache answer stored")  # fmt: skip


@pytest.mark.slow
def test_size_limit(env: Solo, http: httpx.Client) -> None:
    publish_cached(env, ttl_s=60, max_entry_bytes=50)
    body = {**HI, "messages": [{"role": "user", "content": "too big to keep"}]}
    for _ in range(3):
        assert ask(env, http, body).headers["x-configbus-cache"] == "miss"
    metrics = http.get(env.url + "/metrics").text
    assert 'configbus_proxy_cache_total{model="m",outcome="too_large"}' in metrics


@pytest.mark.slow
def test_routing_change_misses(env: Solo, http: httpx.Client) -> None:
    data = publish_cached(env)
    body = {**HI, "messages": [{"role": "user", "content": "routing"}]}
    stored = until_hit(env, http, body)
    data["metadata"] = {"note": "not about routing"}
    env.publish(data)
    assert ask(env, http, body).content == stored.content
    data["models"][0]["params"] = {"temperature": 0.7}
    env.publish(data)
    changed = ask(env, http, body)
    assert changed.headers["x-configbus-cache"] == "miss" and changed.content != stored.content


@pytest.mark.slow
def test_a_failing_upstream_is_never_cached(env: Solo, http: httpx.Client) -> None:
    data = publish_cached(env)
    data["models"][0]["fallbacks"] = []  # the failure reaches the client
    data["providers"][0]["circuit_breaker"] = {"failure_threshold": 100}
    env.publish(data)
    body = {**HI, "messages": [{"role": "user", "content": "failing"}]}
    for status, answered in ((400, 400), (500, 502)):
        env.a.control(fail_rate=1.0, status=status)
        for _ in range(2):
            r = env.post(http, "/v1/chat/completions", body)
            assert r.status_code == answered and r.headers["x-configbus-cache"] == "miss"
    env.a.control(fail_rate=0.0)
    ok = ask(env, http, body)
    assert ok.headers["x-configbus-cache"] == "miss" and "choices" in ok.json()


@pytest.mark.slow
def test_stream_replays_a_cached_answer(env: Solo, http: httpx.Client) -> None:
    publish_cached(env)
    body = {**HI, "messages": [{"role": "user", "content": "stream me"}]}
    stored = until_hit(env, http, body).json()
    before = upstream_calls(env)
    r = env.post(http, "/v1/chat/completions",
                 {**body, "stream": True, "stream_options": {"include_usage": True}})  # fmt: skip
    assert r.status_code == 200 and r.headers["x-configbus-cache"] == "hit"
    assert r.headers["content-type"].startswith("text/event-stream")
    datas = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == stored["choices"][0]["message"]["content"]
    assert {c["id"] for c in chunks} == {stored["id"]}
    assert chunks[-1]["usage"] == stored["usage"]
    assert upstream_calls(env) == before


@pytest.mark.slow
def test_embeddings_are_cached_too(env: Solo, http: httpx.Client) -> None:
    data = data_for(env.a, env.b)
    data["models"].append(
        {"name": "emb", "purpose": "embeddings", "cache": {"ttl_s": 60},
         "deployments": [{"provider": "upstream-a", "model": "e"}]}
    )  # fmt: skip
    env.publish(data)
    body = {"model": "emb", "input": "cache me"}
    first = env.post(http, "/v1/embeddings", body)
    assert first.headers["x-configbus-cache"] == "miss"
    hit = wait_for(
        lambda: (
            (r := env.post(http, "/v1/embeddings", body)).headers["x-configbus-cache"] == "hit"
            and r
        ),
        timeout=5,
    )
    assert hit.content == first.content


@pytest.mark.slow
def test_a_streamed_miss_is_stored_when_it_carries_its_usage(env: Solo, http: httpx.Client) -> None:
    publish_cached(env)
    body = {**HI, "messages": [{"role": "user", "content": "streamed first"}]}
    r = env.post(http, "/v1/chat/completions", {**body, "stream": True})
    assert r.headers["x-configbus-cache"] == "miss" and r.text.rstrip().endswith("[DONE]")
    # Without its usage chunk it was not stored: the next one is a miss too.
    r = env.post(http, "/v1/chat/completions",
                 {**body, "stream": True, "stream_options": {"include_usage": True}})  # fmt: skip
    assert r.headers["x-configbus-cache"] == "miss"
    before = upstream_calls(env)
    hit = until_hit(env, http, body)
    answer = hit.json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": "served by A"}
    assert answer["usage"]["total_tokens"] == 4
    assert upstream_calls(env) == before


@pytest.mark.slow
def test_a_hit_is_counted_in_usage_as_the_cache_s_with_no_cost(
    env: Solo, http: httpx.Client
) -> None:
    import asyncio
    import time

    import redis.asyncio as aioredis

    from configbus.usage import UsageReader

    async def by_provider() -> dict[str, tuple[int, int, int]]:
        r = aioredis.from_url(env.redis_url)
        try:
            now = int(time.time())
            report = await UsageReader(r, env.namespace).query(
                start=now - 3600, end=now + 60, filters={"model": "m"}, group_by=["provider"]
            )
        finally:
            await r.aclose()
        return {
            str(row.provider): (row.requests, row.prompt_tokens + row.completion_tokens,
                                row.cost_micro_usd)
            for row in report.rows
        }  # fmt: skip

    def delta(now: dict[str, tuple[int, int, int]], provider: str) -> tuple[int, ...]:
        b = before.get(provider, (0, 0, 0))
        return tuple(x - y for x, y in zip(now.get(provider, (0, 0, 0)), b, strict=True))

    data = publish_cached(env)
    data["models"][0]["deployments"][0]["price"] = {
        "input_per_million": 1000.0,
        "output_per_million": 1000.0,
    }
    data["metadata"] = {"run": "usage-of-hits"}
    env.publish(data)
    env.a.control(usage_tokens=10)

    def usage() -> dict[str, Any]:
        return http.get(env.url + "/status").json()["usage"]  # type: ignore[no-any-return]

    # Earlier tests' counts are all in Redis before the baseline is read: nothing pending,
    # then one more flush done (a batch may have been on its way).
    idle = wait_for(lambda: (u := usage())["pending_cells"] == 0 and u, timeout=5, what="idle")
    wait_for(lambda: usage()["flushes"] > idle["flushes"], timeout=5, what="one more flush")
    before = asyncio.run(by_provider())
    body = {**HI, "messages": [{"role": "user", "content": f"usage of hits {time.time()}"}]}
    assert ask(env, http, body).headers["x-configbus-cache"] == "miss"
    until_hit(env, http, body)
    ask(env, http, body)  # a second hit

    def counted() -> dict[str, tuple[int, int, int]] | None:
        got = asyncio.run(by_provider())
        return got if delta(got, "cache")[0] >= 2 else None

    got = wait_for(counted, timeout=5, what="the hits flushed to usage")
    requests, tokens, cost = delta(got, "cache")
    assert tokens == requests * 10 and cost == 0  # the stored answer's tokens, nothing paid
    assert delta(got, "upstream-a")[2] > 0  # the miss was paid for
