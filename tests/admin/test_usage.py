"""`GET .../usage` and `configbus usage`: what the replicas flushed, as a viewer reads it."""

from __future__ import annotations

import argparse
import asyncio
import calendar
import json
from collections.abc import Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from configbus.cli.usage import when
from configbus.usage import UsageWriter
from tests.admin.helpers import app_for, serve
from tests.admin.test_cli import TOKENS, cli, run
from tests.support import RedisServer

T = calendar.timegm((2026, 11, 30, 22, 15, 0))


@pytest.fixture
def admin_url(redis_server: RedisServer) -> Iterator[str]:
    with serve(app_for(redis_server.url)) as url:
        yield url


def flushed(redis_url: str, namespace: str) -> None:
    async def go() -> None:
        r = aioredis.from_url(redis_url)
        w = UsageWriter(r, namespace, timeout_s=2)
        cells = {
            ("key_a", "ml", "chat", "p1"): [3, 30, 60, 1_500_000],
            ("key_b", "", "chat", "p2"): [1, 10, 10, 20],
        }
        await w.flush({T // 60: cells}, [], "", T)
        await w.aclose()
        await r.aclose()

    asyncio.run(go())


def test_usage_by_key_and_filtered(
    redis_server: RedisServer, namespace: str, admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flushed(redis_server.url, namespace)
    span = ("--from", "2026-11-30T22:00Z", "--to", "2026-11-30T23:00Z")
    code, out, _ = run(capsys, cli(admin_url, namespace, "viewer", "usage", *span))
    assert code == 0
    lines = out.splitlines()
    assert (
        lines[0] == f"usage of namespace {namespace}, 2026-11-30 22:00:00Z to 2026-11-30 23:00:00Z"
    )
    assert lines[2].split() == ["key_a", "3", "30", "60", "1.500000"]
    assert lines[3].split() == ["key_b", "1", "10", "10", "0.000020"]
    assert lines[4].split() == ["TOTAL", "4", "40", "70", "1.500020"]
    code, out, _ = run(
        capsys,
        cli(admin_url, namespace, "viewer", "usage", *span, "--team", "ml", "--group-by",
            "model,provider", "--json"),
    )  # fmt: skip
    body = json.loads(out)
    assert body["group_by"] == ["model", "provider"]
    assert [(r["model"], r["provider"], r["requests"]) for r in body["rows"]] == [("chat", "p1", 3)]
    assert body["total"]["cost_micro_usd"] == 1_500_000 and body["total"]["cost_usd"] == 1.5
    # Outside the range: nothing; a bad grouping: refused by the CLI before any call.
    code, out, _ = run(capsys, cli(admin_url, namespace, "viewer", "usage", "--to", "2026-11-30"))
    assert code == 0 and out.splitlines()[-1].split() == ["TOTAL", "0", "0", "0", "0.000000"]
    with pytest.raises(SystemExit):
        run(capsys, cli(admin_url, namespace, "viewer", "usage", "--group-by", "colour"))
    assert "not one of key, model, provider, team" in capsys.readouterr().err


def test_usage_per_hour_from_the_cli_and_too_many_buckets_refused(
    redis_server: RedisServer, namespace: str, admin_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flushed(redis_server.url, namespace)
    span = ("--from", "2026-11-30T21:30Z", "--to", "2026-11-30T22:30Z")
    code, out, _ = run(
        capsys,
        cli(admin_url, namespace, "viewer", "usage", *span, "--bucket", "hour", "--group-by",
            "team"),
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("2026-11-30 21:00:00Z to 2026-11-30 23:00:00Z")  # whole hours
    assert lines[1].split() == ["TIME", "TEAM", "REQUESTS", "PROMPT", "COMPLETION", "COST", "USD"]
    assert lines[2].split() == ["2026-11-30", "22:00Z", "-", "1", "10", "10", "0.000020"]
    assert lines[3].split() == ["2026-11-30", "22:00Z", "ml", "3", "30", "60", "1.500000"]
    assert lines[4].split() == ["TOTAL", "4", "40", "70", "1.500020"]
    # The API: rows carry their bucket's start; past the cap, a 400 naming the parameter.
    base = f"{admin_url}/v1/namespaces/{namespace}/usage"
    auth = {"Authorization": f"Bearer {TOKENS['viewer'][1]}"}
    r = httpx.get(base, params={"from": T - 120, "to": T + 60, "bucket": "minute"}, headers=auth)
    assert r.status_code == 200
    assert [(x["t"], x["requests"]) for x in r.json()["rows"]] == [(T, 4)]
    r = httpx.get(base, params={"from": 0, "to": T, "bucket": "day"}, headers=auth)
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("the range")
    r = httpx.get(base, params={"from": T - 3 * 86_400, "bucket": "minute"}, headers=auth)
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith("bucket: ")
    assert "more than 2000 buckets" in r.json()["error"]["message"]
    r = httpx.get(base, params={"bucket": "week"}, headers=auth)
    assert r.status_code == 400
    assert r.json()["error"]["message"] == (
        "query parameter 'bucket' must be one of minute, hour, day"
    )


def test_times_read_as_unix_utc_dates_or_spans_back() -> None:
    assert when("1796076900") == 1796076900
    assert when("2026-11-30T22:15Z") == T
    assert when("2026-11-30T22:15:00") == T
    assert when("2026-11-30") == T - 22 * 3600 - 15 * 60
    assert when("90m", now=T) == T - 5400 and when("7d", now=T) == T - 7 * 86400
    with pytest.raises(argparse.ArgumentTypeError, match="not a time"):
        when("yesterday")
