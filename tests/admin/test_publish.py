from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from configbus.codec import decode_body
from configbus.crypto import SecretBox, decrypt_secrets
from configbus.testing import sample_data
from tests.admin.helpers import SECRET_KEY, app_for, auth, client
from tests.support import RedisServer

PLAINTEXT = "sk-upstream-secret-a"  # the api key in sample_data()


def url(ns: str, path: str) -> str:
    return f"/v1/namespaces/{ns}/{path}"


async def test_put_get_conflict_and_noop(redis_server: RedisServer, namespace: str) -> None:
    async with client(app_for(redis_server.url)) as c:
        r = await c.put(
            url(namespace, "config"),
            headers={**auth("publisher"), "If-Match": "0"},
            json={"document": sample_data(), "message": "first"},
        )
        assert r.status_code == 201 and r.json()["version"] == 1
        assert r.headers["etag"] == '"1"'
        got = await c.get(url(namespace, "config"), headers=auth("viewer"))
        assert got.status_code == 200 and got.headers["etag"] == '"1"'
        body = got.json()
        assert body["version"] == 1 and body["author"] == "paul" and body["message"] == "first"
        key = body["document"]["providers"][0]["api_key"]
        assert set(key) == {"masked"} and key["masked"].startswith("sha256:")

        # The masked document sent back unchanged: same body, a no-op.
        r = await c.put(
            url(namespace, "config"),
            headers={**auth("publisher"), "If-Match": "1"},
            json={"document": body["document"]},
        )
        assert r.status_code == 200 and r.json()["outcome"] == "noop"

        doc = copy.deepcopy(body["document"])
        doc["logging"] = {"level": "DEBUG"}
        r = await c.put(
            url(namespace, "config"),
            headers={**auth("publisher"), "If-Match": "1"},
            json={"document": doc, "message": "debug"},
        )
        assert r.status_code == 201 and r.json()["version"] == 2
        # Another admin still on version 1: 409 naming the current version.
        r = await c.put(
            url(namespace, "config"),
            headers={**auth("publisher"), "If-Match": '"1"'},
            json={"document": sample_data(), "message": "stale"},
        )
        assert r.status_code == 409
        err = r.json()["error"]
        assert err["code"] == "version_conflict" and err["current_version"] == 2
        assert r.headers["etag"] == '"2"'

    # The stored secret is the original one, still decryptable by replicas.
    record = await _head_record(redis_server, namespace)
    stored = decrypt_secrets(decode_body(record), SecretBox([SECRET_KEY]))
    assert stored.providers[0].api_key is not None
    assert stored.providers[0].api_key.secret == PLAINTEXT


async def _head_record(redis_server: RedisServer, ns: str) -> bytes:
    r = redis_server.client()
    head = int(r.get(f"cb:{{{ns}}}:head") or 0)
    body: Any = r.hget(f"cb:{{{ns}}}:v:{head}", "body")
    return bytes(body or b"")


async def test_invalid_document_lists_every_issue_with_its_path(
    redis_server: RedisServer, namespace: str
) -> None:
    data = sample_data()
    data["providers"][0]["timeout_s"] = -1
    data["models"][0]["deployments"][0]["provider"] = "nope"
    data["clients"][0]["colour"] = "blue"
    async with client(app_for(redis_server.url)) as c:
        for path in ("config", "validate"):
            method = "PUT" if path == "config" else "POST"
            r = await c.request(
                method, url(namespace, path), headers=auth("publisher"), json={"document": data}
            )
            assert r.status_code == 422
            err = r.json()["error"]
            assert err["code"] == "invalid_document"
            paths = {i["path"] for i in err["issues"]}
            assert "providers[0].timeout_s" in paths
            assert "clients[0]" in paths or "clients[0].colour" in paths
        r = await c.put(
            url(namespace, "config"),
            headers=auth("publisher"),
            json={"document": sample_data(), "extra": 1},
        )
        assert r.status_code == 422 and r.json()["error"]["issues"]
        r = await c.put(url(namespace, "config"), headers=auth("publisher"), content=b"{nope")
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
        # Semantic check: reference to an unknown provider.
        data = sample_data()
        data["models"][0]["deployments"][0]["provider"] = "nope"
        r = await c.put(
            url(namespace, "config"), headers=auth("publisher"), json={"document": data}
        )
        assert r.status_code == 422
        assert any(
            i["path"].startswith("models[0].deployments[0]") for i in r.json()["error"]["issues"]
        )
        # A mask matching no stored secret is refused, with its path.
        data = sample_data()
        data["providers"][0]["api_key"] = {"masked": "sha256:000000000000000000000000"}
        r = await c.put(
            url(namespace, "config"), headers=auth("publisher"), json={"document": data}
        )
        assert r.status_code == 422
        assert r.json()["error"]["issues"][0]["path"] == "providers[0].api_key"
    assert not redis_server.client().exists(f"cb:{{{namespace}}}:head")


async def test_body_limit_413(redis_server: RedisServer, namespace: str) -> None:
    async with client(app_for(redis_server.url, max_body_bytes=2048)) as c:
        data = sample_data()
        data["metadata"] = {"blob": "x" * 4096}
        r = await c.put(
            url(namespace, "config"), headers=auth("publisher"), json={"document": data}
        )
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

        async def chunks() -> AsyncIterator[
            bytes
        ]:  # no Content-Length: the limit applies while streaming
            for _ in range(10):
                yield b" " * 512

        r = await c.put(url(namespace, "config"), headers=auth("publisher"), content=chunks())
        assert r.status_code == 413


async def test_idempotency_key_replays_the_first_result(
    redis_server: RedisServer, namespace: str
) -> None:
    async with client(app_for(redis_server.url)) as c:
        h = {**auth("publisher"), "Idempotency-Key": "deploy-42"}
        first = await c.put(
            url(namespace, "config"), headers=h, json={"document": sample_data(), "message": "a"}
        )
        again = await c.put(
            url(namespace, "config"), headers=h, json={"document": sample_data(), "message": "a"}
        )
        assert first.status_code == 201 and again.status_code == 200
        assert again.json()["outcome"] == "idempotent"
        assert again.json()["version"] == first.json()["version"]
        other = sample_data(upstream_a="http://127.0.0.1:9009/v1")
        r = await c.put(url(namespace, "config"), headers=h, json={"document": other})
        assert r.status_code == 422 and r.json()["error"]["code"] == "idempotency_mismatch"


async def test_patch_merges_into_the_current_document(
    redis_server: RedisServer, namespace: str
) -> None:
    async with client(app_for(redis_server.url)) as c:
        r = await c.patch(url(namespace, "config"), headers=auth("publisher"), json={})
        assert r.status_code == 404 and r.json()["error"]["code"] == "no_document"
        await c.put(
            url(namespace, "config"), headers=auth("publisher"), json={"document": sample_data()}
        )
        h = {**auth("publisher"), "Content-Type": "application/merge-patch+json"}
        r = await c.patch(
            url(namespace, "config") + "?message=debug",
            headers=h,
            content=b'{"logging": {"level": "DEBUG"}, "metadata": {"owner": null}}',
        )
        assert r.status_code == 201, r.text
        got = (await c.get(url(namespace, "config"), headers=auth("viewer"))).json()
        assert got["kind"] == "patch" and got["message"] == "debug"
        assert got["document"]["logging"] == {"level": "DEBUG"}
        assert "owner" not in got["document"].get("metadata", {})
        # A new secret in a patch replaces the stored one whole.
        r = await c.patch(url(namespace, "config"), headers=h, json={"providers": None})
        assert r.status_code == 422  # models now refer to missing providers
        r = await c.patch(
            url(namespace, "config"),
            headers={**h, "If-Match": "1"},
            json={"logging": {"level": "ERROR"}},
        )
        assert r.status_code == 409 and r.json()["error"]["current_version"] == 2


async def test_rollback_diff_and_history(redis_server: RedisServer, namespace: str) -> None:
    async with client(app_for(redis_server.url)) as c:
        for level in ("INFO", "DEBUG", "ERROR"):
            data = sample_data()
            data["logging"] = {"level": level}
            r = await c.put(
                url(namespace, "config"),
                headers=auth("publisher"),
                json={"document": data, "message": level},
            )
            assert r.status_code == 201
        r = await c.post(
            url(namespace, "rollback"),
            headers=auth("sre"),
            json={"to_version": 1, "message": "bad debug"},
        )
        assert r.status_code == 201 and r.json()["version"] == 4
        v4 = (await c.get(url(namespace, "versions/4"), headers=auth("viewer"))).json()
        v1 = (await c.get(url(namespace, "versions/1"), headers=auth("viewer"))).json()
        assert v4["kind"] == "rollback" and v4["source"] == 1 and v4["sha256"] == v1["sha256"]
        d = (await c.get(url(namespace, "diff?from=2&to=3"), headers=auth("viewer"))).json()
        assert '-    "level": "DEBUG"' in d["unified"] and '+    "level": "ERROR"' in d["unified"]
        assert d["changes"] == [{"path": "logging.level", "change": "changed"}]
        page = (await c.get(url(namespace, "versions?limit=2"), headers=auth("viewer"))).json()
        assert [v["version"] for v in page["versions"]] == [4, 3]
        assert page["next_before"] == 3
        page = (
            await c.get(url(namespace, "versions?limit=2&before=3"), headers=auth("viewer"))
        ).json()
        assert [v["version"] for v in page["versions"]] == [2, 1]
        r = await c.post(url(namespace, "rollback"), headers=auth("sre"), json={"to_version": 99})
        assert r.status_code == 404
        r = await c.get(url(namespace, "versions/99"), headers=auth("viewer"))
        assert r.status_code == 404


async def test_diff_names_the_leaf_inside_a_section(
    redis_server: RedisServer, namespace: str
) -> None:
    async with client(app_for(redis_server.url)) as c:
        data = sample_data()
        for timeout in (10, 20):
            data["providers"][0]["timeout_s"] = timeout
            r = await c.put(
                url(namespace, "config"), headers=auth("publisher"), json={"document": data}
            )
            assert r.status_code == 201
        d = (await c.get(url(namespace, "diff?from=1&to=2"), headers=auth("viewer"))).json()
        assert d["changes"] == [{"path": "providers[0].timeout_s", "change": "changed"}]


async def test_export_import_and_rotate(redis_server: RedisServer, namespace: str) -> None:
    other = namespace + "-copy"
    async with client(app_for(redis_server.url)) as c:
        await c.put(
            url(namespace, "config"), headers=auth("publisher"), json={"document": sample_data()}
        )
        r = await c.post(url(namespace, "rotate-secrets"), headers=auth("admin"))
        assert r.status_code == 201 and r.json()["version"] == 2
        export = (await c.get(url(namespace, "export"), headers=auth("viewer"))).json()
        assert export["head"] == 2 and len(export["records"]) == 2
        r = await c.post(url(other, "import"), headers=auth("admin"), json=export)
        assert r.status_code == 201 and r.json() == {"head": 2, "versions": 2}
        r = await c.post(url(other, "import"), headers=auth("admin"), json=export)
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_empty"
        a = (await c.get(url(namespace, "config"), headers=auth("viewer"))).json()
        b = (await c.get(url(other, "config"), headers=auth("viewer"))).json()
        assert a["sha256"] == b["sha256"] and a["document"] == b["document"]
        export["records"][0]["sha256"] = "0" * 64
        r = await c.post(url(other + "x", "import"), headers=auth("admin"), json=export)
        assert r.status_code == 422


async def test_no_plaintext_secret_anywhere(
    redis_server: RedisServer, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with client(app_for(redis_server.url)) as c:
        bad = sample_data()
        bad["models"][0]["deployments"][0]["provider"] = "nope"
        calls = [
            ("POST", "validate", {"document": sample_data()}),
            ("PUT", "config", {"document": bad}),
            ("PUT", "config", {"document": sample_data(), "message": "m"}),
            ("GET", "config", None),
            ("PATCH", "config", {"logging": {"level": "DEBUG"}}),
            ("GET", "versions/1", None),
            ("GET", "diff?from=1&to=2", None),
            ("POST", "rotate-secrets", None),
            ("POST", "rollback", {"to_version": 1}),
            ("GET", "export", None),
            ("GET", "audit", None),
            ("GET", "versions", None),
        ]
        for method, path, body in calls:
            r = await c.request(method, url(namespace, path), headers=auth("admin"), json=body)
            assert r.status_code < 500
            seen.append(r.text)
            seen.append(str(r.headers))
        seen.append((await c.get("/metrics")).text)
    rc: Any = redis_server.client()
    for key in rc.scan_iter(f"cb:{{{namespace}}}:*"):
        kind = rc.type(key)
        if kind == b"hash":
            seen.append(str(rc.hgetall(key)))
        elif kind == b"stream":
            seen.append(str(rc.xrange(key)))
        elif kind == b"string":
            seen.append(str(rc.get(key)))
    seen.append(caplog.text)
    everything = "\n".join(seen)
    assert "sha256:" in everything  # masked secrets were shown
    assert PLAINTEXT not in everything


async def test_concurrent_publishes_one_wins_and_patches_lose_nothing(
    redis_server: RedisServer, namespace: str
) -> None:
    import asyncio

    async with client(app_for(redis_server.url)) as c:
        await c.put(
            url(namespace, "config"), headers=auth("publisher"), json={"document": sample_data()}
        )

        async def put(level: str) -> int:
            data = sample_data()
            data["logging"] = {"level": level}
            r = await c.put(
                url(namespace, "config"),
                headers={**auth("publisher"), "If-Match": "1"},
                json={"document": data},
            )
            return r.status_code

        assert sorted(await asyncio.gather(put("DEBUG"), put("ERROR"))) == [201, 409]

        async def patch(key: str) -> int:
            r = await c.patch(
                url(namespace, "config"), headers=auth("publisher"), json={"metadata": {key: "yes"}}
            )
            return r.status_code

        codes = await asyncio.gather(*(patch(f"k{i}") for i in range(3)))
        assert codes == [201, 201, 201]
        doc = (await c.get(url(namespace, "config"), headers=auth("viewer"))).json()
        assert {"k0", "k1", "k2"} <= set(doc["document"]["metadata"])


async def test_without_secret_keys_secrets_are_refused(
    redis_server: RedisServer, namespace: str
) -> None:
    from admin.app import create_app
    from admin.settings import AdminSettings
    from configbus.settings import BusSettings
    from tests.admin.helpers import TOKENS_ENV

    env = {"CONFIGBUS_ADMIN_TOKENS": TOKENS_ENV, "CONFIGBUS_REDIS_URL": redis_server.url}
    app = create_app(
        AdminSettings.from_env(env, bus=BusSettings.from_env(env), publish_limit=1_000_000)
    )
    async with client(app) as c:
        r = await c.put(
            url(namespace, "config"), headers=auth("admin"), json={"document": sample_data()}
        )
        assert r.status_code == 422
        assert r.json()["error"]["issues"][0]["path"] == "providers[0].api_key"
        assert PLAINTEXT not in r.text
        data = sample_data()
        del data["providers"][0]["api_key"]
        r = await c.put(url(namespace, "config"), headers=auth("admin"), json={"document": data})
        assert r.status_code == 201
        r = await c.post(url(namespace, "rotate-secrets"), headers=auth("admin"))
        assert r.status_code == 409 and r.json()["error"]["code"] == "no_secret_keys"


async def test_rollback_to_a_version_replicas_would_reject_is_refused(
    redis_server: RedisServer, namespace: str
) -> None:
    from configbus.connection import connect
    from configbus.store import Store

    async with client(app_for(redis_server.url)) as c:
        r = await c.put(
            url(namespace, "config"), headers=auth("publisher"), json={"document": sample_data()}
        )
        assert r.status_code == 201
        # A version injected past the admin: it references a provider that does not exist.
        store = Store(connect(redis_server.url), namespace)
        try:
            bad = (await store.get(1)).body.replace(b'"provider":"upstream-a"', b'"provider":"x"')
            assert (await store.publish(bad)).version == 2
            await store.publish((await store.get(1)).body)  # v3: fixed again
        finally:
            await store.redis.aclose()
        r = await c.post(url(namespace, "rollback"), headers=auth("sre"), json={"to_version": 2})
        assert r.status_code == 422, r.text
        assert "version 2 would be rejected by the replicas" in r.json()["error"]["message"]
        paths = [i["path"] for i in r.json()["error"]["issues"]]
        assert paths == ["models[0].deployments[0].provider"]
        head = await c.get(url(namespace, "config"), headers=auth("viewer"))
        assert head.json()["version"] == 3  # nothing published


async def test_idempotent_patch_retry_after_head_moved_replays_the_first_result(
    redis_server: RedisServer, namespace: str
) -> None:
    async with client(app_for(redis_server.url)) as c:
        r = await c.put(
            url(namespace, "config"), headers=auth("publisher"), json={"document": sample_data()}
        )
        assert r.status_code == 201
        patch = {"logging": {"level": "DEBUG"}}
        headers = {**auth("publisher"), "Idempotency-Key": "patch-1"}
        first = await c.patch(url(namespace, "config?message=debug"), headers=headers, json=patch)
        assert first.status_code == 201 and first.json()["version"] == 2
        # Another admin moves head before the client's retry arrives.
        other = sample_data()
        other["metadata"] = {"owner": "someone-else"}
        r = await c.put(
            url(namespace, "config"), headers=auth("publisher"), json={"document": other}
        )
        assert r.json()["version"] == 3
        again = await c.patch(url(namespace, "config?message=debug"), headers=headers, json=patch)
        assert again.status_code == 200, again.text
        assert (again.json()["version"], again.json()["outcome"]) == (2, "idempotent")
        # The same key with another request is refused, not silently replayed.
        other_patch = {"logging": {"level": "ERROR"}}
        r = await c.patch(url(namespace, "config"), headers=headers, json=other_patch)
        assert r.status_code == 422 and r.json()["error"]["code"] == "idempotency_mismatch"


async def test_what_the_admin_validated_it_signs_for_the_replicas(
    redis_server: RedisServer, namespace: str
) -> None:
    from configbus.signing import RecordSigner
    from tests.core.helpers import make_store

    async with client(app_for(redis_server.url)) as c:
        for n in (1, 2):
            r = await c.put(
                url(namespace, "config"),
                headers=auth("publisher"),
                json={"document": {**sample_data(), "metadata": {"n": n}}, "message": "signed"},
            )
            assert r.status_code == 201
        r = await c.post(url(namespace, "rollback"), headers=auth("admin"), json={"to_version": 1})
        assert r.status_code == 201, r.text
    store = make_store(redis_server.url, namespace)
    try:
        for v in (1, 2, 3):
            rec = await store.get(v)
            assert RecordSigner([SECRET_KEY]).verify(rec.sha256, rec.sig), v
    finally:
        await store.redis.aclose()
