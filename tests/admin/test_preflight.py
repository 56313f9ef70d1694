"""Preflight of a rollout: changed providers are asked for their model list first."""

from __future__ import annotations

import httpx

from admin.preflight import preflight
from configbus.testing import sample_data
from configbus.validation import to_document
from tests.admin.helpers import app_for, auth, client
from tests.support import RedisServer, free_port

KEY = "sk-upstream-secret-a"


def answer(status: int, body: str) -> httpx.MockTransport:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, text=body)

    transport = httpx.MockTransport(handle)
    transport.seen = seen  # type: ignore[attr-defined]
    return transport


async def test_only_changed_providers_are_asked_and_their_answer_is_reported() -> None:
    old = to_document(sample_data(api_key=KEY))
    new = to_document(sample_data(upstream_a="http://127.0.0.1:9/v1", api_key=KEY))
    ok = answer(200, '{"data": []}')
    assert await preflight(new, old, None, transport=ok) == []
    (asked,) = ok.seen  # type: ignore[attr-defined]
    assert str(asked.url) == "http://127.0.0.1:9/v1/models"
    assert asked.headers["authorization"] == f"Bearer {KEY}"
    assert await preflight(old, old, None, transport=ok) == []  # nothing changed: no call

    refused = answer(401, f'{{"error": "invalid key {KEY}"}}')
    (issue,) = await preflight(new, old, None, transport=refused)
    assert issue.path == "providers[0]"
    assert "answered 401" in issue.message and "invalid key ***" in issue.message
    assert KEY not in issue.message


async def test_a_rollout_whose_new_provider_is_unreachable_is_refused(
    redis_server: RedisServer, namespace: str
) -> None:
    base = f"/v1/namespaces/{namespace}"
    doc = sample_data()
    dead = sample_data(upstream_a=f"http://127.0.0.1:{free_port()}/v1")
    async with client(app_for(redis_server.url)) as c:
        assert (
            await c.put(f"{base}/config", headers=auth("admin"), json={"document": doc})
        ).status_code == 201
        body = {"document": dead, "preflight": True, "stages": [{"selector": "tier=canary"}]}
        r = await c.post(f"{base}/rollouts", headers=auth("admin"), json=body)
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "preflight_failed"
        assert err["issues"][0]["path"] == "providers[0]"
        assert "ConnectError" in err["issues"][0]["message"]
        assert (await c.get(f"{base}/rollout", headers=auth("admin"))).status_code == 404
        body["preflight"] = False
        r = await c.post(f"{base}/rollouts", headers=auth("admin"), json=body)
        assert r.status_code == 201
