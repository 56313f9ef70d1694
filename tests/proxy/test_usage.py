"""Usage as a replica process counts it: token for token what the upstreams reported, for
streamed and plain answers, OpenAI's and Anthropic's, after one flush; cost at the
deployments' prices; nothing at all for requests with wrong keys.

The requests use the document's `clients` (usage keyed by the client's name, no team):
collection keys reach the same counting once the proxy authenticates them."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis as syncredis
import redis.asyncio as aioredis

from configbus.testing import SAMPLE_CLIENT_KEY
from configbus.usage import UsageReader
from tests.proxy.helpers import Mock, Replica, data_for, publish, running
from tests.support import RedisServer, wait_for

NS = "usage"
PRICE_M = {"input_per_million": 2.5, "output_per_million": 10.0}
PRICE_C = {"input_per_million": 3.0, "output_per_million": 15.0}


class Fleet:
    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.a, self.b = Mock("A"), Mock("B")
        self.replica = Replica(redis.url, NS, replica_id="usage-1")
        self.url = self.replica.url

    def status(self) -> dict[str, Any]:
        return httpx.get(self.url + "/status", timeout=2).json()  # type: ignore[no-any-return]

    def one_flush(self) -> None:
        """Wait until the replica has flushed once after now."""
        n = self.status()["usage"]["flushes"]
        wait_for(lambda: self.status()["usage"]["flushes"] > n, timeout=5, what="a flush")


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    redis = RedisServer().start()  # its own: the memory test must see no one else's writes
    f = Fleet(redis)
    try:
        with running(f.a, f.b, f.replica):
            data = data_for(f.a, f.b)
            data["providers"].append(
                {"name": "claude", "type": "anthropic", "base_url": f.b.url + "/v1"}
            )
            data["models"][0]["deployments"][0]["price"] = PRICE_M
            data["models"].append(
                {
                    "name": "c",
                    "deployments": [{"provider": "claude", "model": "claude-x", "price": PRICE_C}],
                }
            )
            v = publish(redis.url, NS, data)
            wait_for(lambda: f.replica.version() == v, timeout=10, what=f"version {v}")
            yield f
    finally:
        redis.cleanup()


def events(body: str) -> list[dict[str, Any]]:
    return [
        json.loads(line[5:])
        for line in body.splitlines()
        if line.startswith("data:") and line[5:].strip() != "[DONE]"
    ]


def test_usage_is_what_the_upstreams_reported_token_for_token(fleet: Fleet) -> None:
    fleet.a.control(prompt_tokens=7, completion_tokens=11)
    fleet.b.control(prompt_tokens=5, completion_tokens=9)
    for m in (fleet.a, fleet.b):
        httpx.post(m.url + "/_reset", timeout=2).raise_for_status()
    msg = [{"role": "user", "content": "hi"}]
    auth = {"authorization": f"Bearer {SAMPLE_CLIENT_KEY}"}
    with httpx.Client(timeout=10) as http:

        def ask(model: str, **extra: Any) -> httpx.Response:
            r = http.post(
                fleet.url + "/v1/chat/completions",
                json={"model": model, "messages": msg, **extra},
                headers=auth,
            )
            assert r.status_code == 200, r.text
            return r

        for _ in range(5):
            assert ask("m").json()["usage"]["prompt_tokens"] == 7
        for _ in range(4):  # the proxy asks for usage; the client did not and gets none
            evs = events(ask("m", stream=True).text)
            assert evs and not any("usage" in e for e in evs)
        for _ in range(3):  # the client asked: it gets the usage chunk
            evs = events(ask("m", stream=True, stream_options={"include_usage": True}).text)
            assert evs[-1]["choices"] == [] and evs[-1]["usage"]["completion_tokens"] == 11
        for _ in range(3):
            assert ask("c").json()["usage"] == {
                "prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14,
            }  # fmt: skip
        for _ in range(2):
            ask("c", stream=True)
    fleet.one_flush()
    a, b = fleet.a.stats(), fleet.b.stats()
    assert a["requests"] == 12 and b["requests"] == 5

    async def query() -> Any:
        client = aioredis.from_url(fleet.redis.url)
        now = int(time.time())
        try:
            return await UsageReader(client, NS).query(
                start=now - 3600, end=now + 60, group_by=["key", "model", "provider", "team"]
            )
        finally:
            await client.aclose()

    report = asyncio.run(query())
    rows = {(r.key, r.model, r.provider, r.team): r for r in report.rows}
    assert set(rows) == {("team-a", "m", "upstream-a", ""), ("team-a", "c", "claude", "")}
    for row, mock, price in (
        (rows["team-a", "m", "upstream-a", ""], a, PRICE_M),
        (rows["team-a", "c", "claude", ""], b, PRICE_C),
    ):
        assert row.requests == mock["requests"]
        assert row.prompt_tokens == mock["prompt_tokens"]
        assert row.completion_tokens == mock["completion_tokens"]
        exact = (
            mock["prompt_tokens"] * price["input_per_million"]
            + mock["completion_tokens"] * price["output_per_million"]
        )  # micro-dollars: USD per million tokens = micro-dollars per token
        assert row.cost_micro_usd == math.floor(exact)
    assert report.total.cost_micro_usd == 12 * (7 * 2.5 + 11 * 10) + 5 * (5 * 3 + 9 * 15)
    metrics = httpx.get(fleet.url + "/metrics", timeout=2).text
    assert (
        'configbus_proxy_usage_tokens_total{kind="prompt",model="m",provider="upstream-a"} 84.0'
        in metrics
    )


async def test_requests_with_wrong_keys_write_nothing(fleet: Fleet) -> None:
    r = syncredis.Redis.from_url(fleet.redis.url)
    fleet.one_flush()
    fleet.one_flush()  # settled: the heartbeat and limits keys exist already

    def state() -> tuple[int, dict[bytes, Any], int]:
        usage = {
            k: r.hgetall(k) if r.type(k) == b"hash" else r.get(k)
            for k in r.scan_iter(f"cb:{{{NS}}}:usage:*")
        }
        return r.dbsize(), usage, r.xlen(f"cb:{{{NS}}}:audit")

    before, memory = state(), r.info("memory")["used_memory"]
    statuses: dict[int, int] = {}
    sem = asyncio.Semaphore(50)
    async with httpx.AsyncClient(timeout=10) as http:

        async def one(i: int) -> None:
            async with sem:
                res = await http.post(
                    fleet.url + "/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer sk-wrong-{i}"} if i % 3 else {},
                )
                statuses[res.status_code] = statuses.get(res.status_code, 0) + 1

        await asyncio.gather(*(one(i) for i in range(3000)))
    assert statuses == {401: 3000}
    await asyncio.to_thread(fleet.one_flush)
    await asyncio.to_thread(fleet.one_flush)
    after, memory_after = state(), r.info("memory")["used_memory"]
    assert after == before
    # Nothing written; what moves is Redis's own bookkeeping (client buffers, heartbeats).
    assert abs(memory_after - memory) < 64 * 1024, (memory, memory_after)
    print(f"used_memory before {memory}, after {memory_after}; dbsize {before[0]}")
    r.close()


def test_a_stalled_redis_fails_no_request_and_loses_no_count(fleet: Fleet) -> None:
    fleet.a.control(prompt_tokens=3, completion_tokens=4, usage_tokens=0)
    httpx.post(fleet.a.url + "/_reset", timeout=2).raise_for_status()

    def total() -> Any:
        async def go() -> Any:
            client = aioredis.from_url(fleet.redis.url)
            now = int(time.time())
            try:
                return (await UsageReader(client, NS).query(start=now - 3600, end=now + 60)).total
            finally:
                await client.aclose()

        return asyncio.run(go())

    fleet.one_flush()
    before = total()
    failures = fleet.status()["usage"]["flush_failures"]
    slowest = 0.0
    fleet.redis.pause()  # SIGSTOP: connections stay open, nothing answers
    try:
        with httpx.Client(timeout=5) as http:
            for i in range(40):
                t0 = time.monotonic()
                r = http.post(
                    fleet.url + "/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer {SAMPLE_CLIENT_KEY}"},
                )
                slowest = max(slowest, time.monotonic() - t0)
                assert r.status_code == 200, r.text
                if i == 19:  # half the requests after a flush has failed
                    wait_for(
                        lambda: fleet.status()["usage"]["flush_failures"] > failures,
                        timeout=5,
                        what="a failed flush",
                    )
    finally:
        fleet.redis.resume()
    assert slowest < 0.5, slowest  # no request waited on Redis
    wait_for(lambda: not fleet.status()["usage"]["failing"], timeout=10, what="a flush again")
    after = total()
    assert after.requests - before.requests == 40 == fleet.a.stats()["requests"]
    assert after.prompt_tokens - before.prompt_tokens == fleet.a.stats()["prompt_tokens"] == 120
    assert after.completion_tokens - before.completion_tokens == 160
