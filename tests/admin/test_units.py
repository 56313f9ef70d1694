from __future__ import annotations

from typing import Any

import httpx
import pytest

from admin.diff import changed_paths, unified
from admin.merge import merge_patch
from configbus.api import ChangedPath
from configbus.codec import decode_body, sha256_hex
from configbus.crypto import SecretBox, decrypt_secrets
from configbus.errors import AdminApiError
from configbus.testing import sample_data
from configbus.tooling.client import AdminClient
from tests.admin.helpers import SECRET_KEY, app_for, auth, client
from tests.support import RedisServer


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        # A secret form in a patch replaces the stored secret whole.
        ({"k": {"masked": "sha256:x"}}, {"k": {"secret": "new"}}, {"k": {"secret": "new"}}),
        ({"k": {"masked": "sha256:x"}}, {"k": None}, {}),
    ],
)
def test_merge_patch_rfc7396_examples(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


def test_changed_paths_and_unified() -> None:
    a = {"x": 1, "l": [1, 2], "d": {"k": "v"}}
    b = {"x": 2, "l": [1], "d": {"k": "v", "n": True}, "y": None}
    assert changed_paths(a, b) == [
        ChangedPath("d.n", "added"),
        ChangedPath("l[1]", "removed"),
        ChangedPath("x", "changed"),
        ChangedPath("y", "added"),
    ]
    assert changed_paths(a, a) == []
    assert changed_paths({"m": ({"t": 1},)}, {"m": ({"t": 2},)}) == [
        ChangedPath("m[0].t", "changed")
    ]
    assert changed_paths({"v": 1}, {"v": 1.0}) == [ChangedPath("v", "changed")]
    text = unified(a, b, from_name="version 1", to_name="version 2")
    assert text.startswith("--- version 1\n+++ version 2\n") and '-  "x": 1\n+  "x": 2,' in text


async def test_bad_headers_and_queries_are_400(redis_server: RedisServer, namespace: str) -> None:
    async with client(app_for(redis_server.url)) as c:
        base = f"/v1/namespaces/{namespace}"
        cases: list[dict[str, Any]] = [
            {"If-Match": "abc"},
            {"If-Match": "-1"},
            {"If-Match": "\u00b2".encode()},
            {"Idempotency-Key": ""},
        ]
        for headers in cases:
            r = await c.put(
                f"{base}/config",
                headers={**auth("admin"), **headers},
                json={"document": sample_data()},
            )
            assert r.status_code == 400, headers
            assert r.json()["error"]["code"] == "bad_request"
        for q in (
            "versions?limit=0",
            "versions?before=x",
            "diff?from=1",
            "audit?before=x",
            "audit?count=5000",
            "versions?limit=%C2%B2",
            "audit?before=%C2%B2-1",
        ):
            r = await c.get(f"{base}/{q}", headers=auth("admin"))
            assert r.status_code == 400, q
        for n in ("abc", "%C2%B2", "0"):
            r = await c.get(f"{base}/versions/{n}", headers=auth("admin"))
            assert r.status_code == 400, n
        for bad in ("bad{ns}", "trailing%0A", "a:b", "-x"):
            r = await c.get(f"/v1/namespaces/{bad}/config", headers=auth("admin"))
            assert r.status_code == 404, bad
            assert r.json()["error"]["code"] == "invalid_namespace"
        r = await c.get("/nowhere")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = await c.delete(f"{base}/config", headers=auth("admin"))
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        live = await c.get("/health/live")
        assert live.json() == {"status": "ok"}
        metrics = (await c.get("/metrics")).text
        assert 'configbus_admin_requests_total{action="publish",status="400"} 4.0' in metrics


def test_client_turns_error_bodies_into_exceptions() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            409,
            json={
                "error": {
                    "code": "version_conflict",
                    "message": "expected version 1, but the current version is 2",
                    "issues": [{"path": "a.b", "message": "bad"}],
                    "current_version": 2,
                }
            },
        )

    c = AdminClient("http://admin", token="t", transport=httpx.MockTransport(handler))
    with pytest.raises(AdminApiError) as info:
        c.publish({}, message="m", if_match=1)
    err = info.value
    assert err.status == 409 and err.code == "version_conflict" and err.current_version == 2
    assert "a.b: bad" in str(err)
    c.close()


async def test_corrupt_record_is_a_json_409_never_a_500(
    redis_server: RedisServer, namespace: str
) -> None:
    async with client(app_for(redis_server.url)) as c:
        base = f"/v1/namespaces/{namespace}"
        r = await c.put(f"{base}/config", headers=auth("admin"), json={"document": {}})
        assert r.status_code == 201
        redis_server.client().hset(f"cb:{{{namespace}}}:v:1", "body", b'{"providers": 3}')
        r = await c.get(f"{base}/config", headers=auth("viewer"))
        assert r.status_code == 409 and r.json()["error"]["code"] == "corrupt_record"
        r = await c.post(f"{base}/rotate-secrets", headers=auth("admin"), content=b"{oops")
        assert r.status_code == 400
        entries = (await c.get(f"{base}/audit", headers=auth("viewer"))).json()["entries"]
        # The failed write is audited; the read is not (reads never are; see admin/audit.py).
        assert [e["outcome"] for e in entries[:2]] == ["invalid_json", "created"]


@pytest.mark.parametrize("damage", ["checksum", "unreadable", "invalid"])
async def test_a_fix_can_be_published_over_a_corrupt_or_invalid_head(
    redis_server: RedisServer, namespace: str, damage: str
) -> None:
    """Found by the chaos soak: publishing reads head to reuse its secrets' ciphertext, and a
    head written by something that bypassed the admin made every publish a 500, so the
    broken head could not be replaced."""
    async with client(app_for(redis_server.url)) as c:
        base = f"/v1/namespaces/{namespace}"
        r = await c.put(f"{base}/config", headers=auth("admin"), json={"document": sample_data()})
        assert r.status_code == 201
        masked = (await c.get(f"{base}/config", headers=auth("viewer"))).json()["document"]
        key, raw = f"cb:{{{namespace}}}:v:1", redis_server.client()
        if damage == "checksum":
            raw.hset(key, "body", raw.hget(key, "body") + b" ")  # type: ignore[operator]
        elif damage == "unreadable":
            raw.hdel(key, "created_at")
        else:
            bad = b'{"providers": 3}'
            raw.hset(key, mapping={"body": bad, "sha256": sha256_hex(bad)})

        data = sample_data()
        data["metadata"] = {"owner": "fixed"}
        r = await c.put(
            f"{base}/config",
            headers={**auth("admin"), "If-Match": "1"},
            json={"document": data, "message": "fix"},
        )
        assert r.status_code == 201, r.text
        body = raw.hget(f"cb:{{{namespace}}}:v:2", "body")
        assert isinstance(body, bytes)
        doc = decrypt_secrets(decode_body(body), SecretBox([SECRET_KEY]))
        assert doc.providers[0].api_key is not None
        assert doc.providers[0].api_key.secret == "sk-upstream-secret-a"

        # A masked secret cannot be resolved against an untrusted head: 422, not 500.
        raw.hdel(f"cb:{{{namespace}}}:v:2", "created_at")
        r = await c.put(
            f"{base}/config",
            headers={**auth("admin"), "If-Match": "2"},
            json={"document": masked},
        )
        assert r.status_code == 422, r.text
        assert "send the secret itself" in r.text
