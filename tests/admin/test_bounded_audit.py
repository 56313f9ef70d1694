"""Issue 19, bounded audit: strangers cannot grow Redis or push real history out; the audit
is filtered by actor, action and outcome; stored and printed text carries no control bytes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from admin.audit import DENIED_KEY, DENIED_MAXLEN
from configbus.cli import main
from configbus.cli.text import table
from configbus.escape import printable
from configbus.testing import sample_data
from tests.admin.helpers import TOKENS, app_for, auth, client, serve
from tests.support import RedisServer

FLOOD = 3000


def _figures(r: Any) -> tuple[int, int]:
    return int(r.info("memory")["used_memory"]), int(r.dbsize())


async def test_an_anonymous_flood_leaves_redis_bounded_and_history_findable(
    own_redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = own_redis.client()
    ns = "real"
    async with client(app_for(own_redis.url)) as c:
        r = await c.put(
            f"/v1/namespaces/{ns}/config",
            headers=auth("admin"),
            json={"document": sample_data(), "message": "the real one"},
        )
        assert r.status_code == 201
        mem0, keys0 = _figures(raw)
        long_tail = "x" * 8000

        async def one(i: int) -> int:
            kind = i % 3
            if kind == 0:  # a namespace nobody made
                path = f"/v1/namespaces/made-up-{i}/config"
            elif kind == 1:  # a long path under the real namespace
                path = f"/v1/namespaces/{ns}/versions/{long_tail}{i}"
            else:  # an escape sequence meant for the operator's terminal
                path = f"/v1/namespaces/{ns}/versions/%1b%5b2J%1b%5bH{i}"
            resp = await c.get(path, headers={"Authorization": "Bearer wrong"} if i % 2 else {})
            return resp.status_code

        codes: list[int] = []
        for start in range(0, FLOOD, 200):
            codes += await asyncio.gather(*(one(i) for i in range(start, min(FLOOD, start + 200))))
        assert set(codes) == {401}
        mem1, keys1 = _figures(raw)
        with capsys.disabled():
            print(
                f"\n{FLOOD} anonymous requests: Redis {mem0 / 1e6:.2f} MB, {keys0} keys before; "
                f"{mem1 / 1e6:.2f} MB, {keys1} keys after; denied stream {raw.xlen(DENIED_KEY)} entries"
            )
        assert not raw.keys("cb:{made-up-*"), "a 401 created keys for a made-up namespace"
        assert keys1 <= keys0 + 1  # the one denied stream
        assert raw.xlen(DENIED_KEY) <= DENIED_MAXLEN + 100
        assert mem1 - mem0 < 2_000_000  # before: +24 MB (every 8 KB path stored)
        metrics = (await c.get("/metrics")).text
        assert (
            f'configbus_admin_denied_total{{action="version",outcome="unauthorized"}} {FLOOD * 2 // 3}.0'
            in metrics
        )
        assert "configbus_admin_audit_unrecorded_total" in metrics

        # Real history is untouched and findable by actor and action.
        base = f"/v1/namespaces/{ns}/audit"
        page = (await c.get(f"{base}?actor=ada&action=publish", headers=auth("viewer"))).json()
        assert [e["fields"]["message"] for e in page["entries"]] == ["the real one"]
        # The refusals that named the namespace are there too, sampled, cut and escaped.
        page = (
            await c.get(f"{base}?outcome=unauthorized&count=1000", headers=auth("viewer"))
        ).json()
        denied = page["entries"]
        assert denied and all(e["actor"] == "anonymous" for e in denied)
        assert all(len(e["fields"]["path"]) <= 200 for e in denied)
        assert not any("\x1b" in e["fields"]["path"] for e in denied)
        assert any("\\x1b[2J" in e["fields"]["path"] for e in denied)
        assert any(int(e["fields"].get("unrecorded", "0")) > 0 for e in denied)

    with serve(app_for(own_redis.url)) as url:
        argv = ["audit", "--admin-url", url, "--token", TOKENS["viewer"][1], "-n", ns]
        assert main([*argv, "--outcome", "unauthorized", "--count", "100"]) == 0
        out = capsys.readouterr().out
        assert "anonymous" in out and "\x1b" not in out
        assert main([*argv, "--actor", "ada"]) == 0
        out = capsys.readouterr().out
        assert "publish" in out and "anonymous" not in out


async def test_reads_are_not_audited_and_cannot_trim_history(
    redis_server: RedisServer, namespace: str
) -> None:
    """`configbus watch` polls twice a second: were reads audited, an afternoon of watching
    would push every real entry out of the capped stream."""
    key = f"cb:{{{namespace}}}:audit"
    async with client(app_for(redis_server.url)) as c:
        base = f"/v1/namespaces/{namespace}"
        r = await c.put(f"{base}/config", headers=auth("admin"), json={"document": sample_data()})
        assert r.status_code == 201
        before = redis_server.client().xlen(key)
        for path in ("config", "replicas", "versions", "audit", "versions/1", "diff?from=1&to=1"):
            assert (await c.get(f"{base}/{path}", headers=auth("viewer"))).status_code == 200
        assert redis_server.client().xlen(key) == before
        assert (await c.get(f"{base}/export", headers=auth("viewer"))).status_code == 200
        assert redis_server.client().xlen(key) == before + 1  # export is audited


async def test_audit_filters_are_checked(redis_server: RedisServer, namespace: str) -> None:
    async with client(app_for(redis_server.url)) as c:
        r = await c.get(
            f"/v1/namespaces/{namespace}/audit?actor={'a' * 201}", headers=auth("viewer")
        )
        assert r.status_code == 400 and "actor" in r.json()["error"]["message"]


def test_printed_text_is_escaped() -> None:
    assert printable("a\x1b[2Jb\u202e\x9b\ud800") == "a\\x1b[2Jb\\u202e\\x9b\\ud800"
    assert printable("x" * 300, 200) == "x" * 199 + "…"
    shown = table([["A", "B"], ["\x1b]0;owned\x07", "line\nbreak"]])
    assert "\x1b" not in shown and "\x07" not in shown and "\n" not in shown.split("\n", 1)[1]
