from __future__ import annotations

import json

import httpx

from configbus.tooling.mock_upstream import create_app
from proxy.anthropic import StreamTranslator


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app("Z")), base_url="http://mock"
    )


async def test_answers_name_the_upstream_and_count_requests() -> None:
    async with client() as c:
        r = await c.post("/v1/chat/completions", json={"model": "x", "messages": []})
        assert r.headers["x-served-by"] == "Z"
        assert r.json()["choices"][0]["message"]["content"] == "served by Z"
        r = await c.post(
            "/v1/chat/completions", json={"model": "x", "messages": [], "stream": True}
        )
        assert r.headers["content-type"] == "text/event-stream"
        assert r.text.endswith("data: [DONE]\n\n")
        stats = (await c.get("/_stats")).json()
        assert stats["requests"] == 2 and stats["last_request"]["stream"] is True


async def test_control_sets_failures_at_run_time() -> None:
    async with client() as c:
        await c.post("/_control", json={"fail_rate": 1.0, "status": 503})
        r = await c.post("/v1/chat/completions", json={"model": "x", "messages": []})
        assert r.status_code == 503
        assert set(r.json()["error"]) == {"message", "type", "code"}
        r = await c.post("/v1/messages", json={"model": "x", "messages": []})
        assert r.json()["type"] == "error"
        await c.post("/_control", json={"fail_rate": 0.0})
        assert (await c.get("/_stats")).json()["failures"] == 2


async def test_anthropic_stream_translates_to_the_same_text() -> None:
    async with client() as c:
        await c.post("/_control", json={"stream_chunks": 11})
        r = await c.post("/v1/messages", json={"model": "claude", "messages": [], "stream": True})
        out = StreamTranslator().feed(r.content).decode()
        assert out.endswith("data: [DONE]\n\n")
        datas = [line[6:] for line in out.split("\n") if line.startswith("data: {")]
        pieces = [json.loads(d)["choices"][0]["delta"].get("content", "") for d in datas]
        assert len(pieces) == 13  # role, 11 one-letter pieces, finish
        assert "".join(pieces) == "served by Z"
