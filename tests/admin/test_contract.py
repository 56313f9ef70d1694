"""The generated spec against what the routes really answer.

A scripted session calls every operation, reaching the documented statuses of each; every
answer must be documented for its route and status, carry the documented headers, validate
against the generated schema, and decode into the contract's struct and re-encode to the
same JSON (so the struct, and so the spec, names every field the route sends).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import msgspec
import pytest

from admin.openapi import OPERATIONS, spec
from configbus.api import ErrorEnvelope
from configbus.connection import connect
from configbus.counters import counter_key
from configbus.store import ReplicaStatus, Store
from configbus.testing import SAMPLE_CLIENT_KEY, key_sha256, sample_data
from tests.admin.helpers import app_for, auth, client
from tests.proxy.helpers import Mock
from tests.support import RedisServer, free_port

SPEC = spec()
# The client key routes: test_key_routes_answer_every_documented_status calls them.
KEY_OPS = {(m, p) for m, p in OPERATIONS if "/keys" in p}


def _template(method: str, path: str) -> tuple[str, str]:
    """The spec's (method, path) for a concrete request path."""
    for m, p in OPERATIONS:
        if m == method.lower() and re.fullmatch(re.sub(r"{\w+}", "[^/]+", p), path):
            return m, p
    raise AssertionError(f"{method} {path}: not in the spec")


def check(r: httpx.Response) -> tuple[str, str, int]:
    """Assert `r` is what the spec documents for its route and status."""
    method, path = _template(r.request.method, r.request.url.path)
    documented = SPEC["paths"][path][method]["responses"]
    where = f"{method.upper()} {path} → {r.status_code}"
    assert str(r.status_code) in documented, f"{where}: status not documented"
    answer = documented[str(r.status_code)]
    for header, h in answer.get("headers", {}).items():
        if h["required"]:
            assert header in r.headers, f"{where}: no {header} header"
            jsonschema.validate(r.headers[header], h["schema"])
    (media, content), *_ = answer["content"].items()
    assert r.headers["content-type"].startswith(media), where
    if media != "application/json":
        return method, path, r.status_code
    body = r.json()
    schema = {**content["schema"], "components": SPEC["components"]}
    jsonschema.Draft202012Validator(schema).validate(body)
    op = OPERATIONS[method, path]
    struct = op.ok[r.status_code][1] if r.status_code in op.ok else ErrorEnvelope
    assert json.loads(msgspec.json.encode(msgspec.json.decode(r.content, type=struct))) == body, (
        where
    )
    return method, path, r.status_code


@pytest.fixture
def upstream() -> Iterator[Mock]:
    m = Mock("contract").start()
    yield m
    m.service.stop()


async def test_every_answer_is_the_documented_one(
    redis_server: RedisServer, namespace: str, upstream: Mock
) -> None:
    seen: set[tuple[str, str, int]] = set()
    base = f"/v1/namespaces/{namespace}"
    admin = auth("admin")
    doc = sample_data(upstream_a=upstream.url + "/v1")
    store = Store(connect(redis_server.url), namespace)
    async with client(app_for(redis_server.url, max_body_bytes=64 * 1024)) as c:

        async def call(method: str, url: str, **kwargs: Any) -> httpx.Response:
            kwargs.setdefault("headers", admin)
            r = await c.request(method, url, **kwargs)
            seen.add(check(r))
            return r

        for path in ("/health/live", "/health/ready", "/metrics", "/openapi.json"):
            await call("GET", path)
        assert (await call("GET", f"{base}/config")).status_code == 404
        assert (await call("PUT", f"{base}/config", json={"document": doc})).status_code == 201
        assert (await call("PUT", f"{base}/config", json={"document": doc})).status_code == 200
        for headers, status in (
            ({}, 401),
            (auth("viewer"), 403),
            ({**admin, "If-Match": '"9"'}, 409),
            ({**admin, "If-Match": "x"}, 400),
            ({**admin, "Idempotency-Key": "k" * 201}, 400),
        ):
            r = await call("PUT", f"{base}/config", headers=headers, json={"document": doc})
            assert r.status_code == status, headers
        bad = {"document": {"providers": [{"name": "x"}]}}
        assert (await call("PUT", f"{base}/config", json=bad)).status_code == 422
        big = {"document": doc, "message": "x" * 70_000}
        assert (await call("PUT", f"{base}/config", json=big)).status_code == 413
        patch = {"logging": {"level": "DEBUG"}}
        r = await call("PATCH", f"{base}/config?message=debug", json=patch)
        assert r.status_code == 201
        assert (await call("GET", f"{base}/config")).status_code == 200
        assert (await call("POST", f"{base}/validate", json={"document": doc})).status_code == 200
        assert (await call("POST", f"{base}/validate", json=bad)).status_code == 422
        r = await call("POST", f"{base}/validate?probe=true", json={"document": doc})
        assert r.status_code == 200
        dead = sample_data(upstream_a=f"http://127.0.0.1:{free_port()}/v1")
        r = await call("POST", f"{base}/validate?probe=true", json={"document": dead})
        assert r.status_code == 422 and r.json()["error"]["code"] == "probe_failed"
        providers = f"{base}/providers"
        assert (await call("GET", f"{providers}/upstream-a/models")).status_code == 200
        assert (await call("POST", f"{providers}/upstream-a/test")).status_code == 200
        assert (await call("GET", f"{providers}/nope/models")).status_code == 404
        r = await call("POST", f"{providers}/upstream-a/test", headers=auth("viewer"))
        assert r.status_code == 403
        upstream.control(fail_rate=1.0, status=401)
        assert (await call("GET", f"{providers}/upstream-a/models")).status_code == 502
        r = await call("POST", f"{providers}/upstream-a/test")
        assert r.status_code == 200 and r.json()["status"] == 401
        assert (await call("GET", f"{base}/versions?limit=1")).status_code == 200
        assert (await call("GET", f"{base}/versions?limit=0")).status_code == 400
        assert (await call("GET", f"{base}/versions/1")).status_code == 200
        assert (await call("GET", f"{base}/versions/99")).status_code == 404
        assert (await call("GET", f"{base}/versions/x")).status_code == 400
        assert (await call("GET", f"{base}/diff?from=1&to=2")).status_code == 200
        assert (await call("GET", f"{base}/diff?from=1")).status_code == 400
        r = await call("POST", f"{base}/rollback", json={"to_version": 1, "message": "back"})
        assert r.status_code == 201
        await store.report(
            ReplicaStatus(replica_id="r1", state="rejected", version=1, rejected_version=3)
        )
        await store.report(
            ReplicaStatus(
                replica_id="r2", state="applied", version=3, labels={"tier": "canary"}, staged=True
            )
        )
        assert (await call("GET", f"{base}/replicas")).status_code == 200
        assert (await call("GET", f"{base}/audit?count=2")).status_code == 200
        assert (await call("GET", f"{base}/audit?before=0-0")).status_code == 200
        assert (await call("GET", f"{base}/audit?before=x")).status_code == 400
        r = await call("GET", f"{base}/usage?group_by=key,model", headers=auth("viewer"))
        assert r.status_code == 200 and r.json()["total"]["requests"] == 0
        assert (await call("GET", f"{base}/usage?group_by=colour")).status_code == 400
        assert (await call("GET", f"{base}/usage?from=20&to=10")).status_code == 400
        r = await call("GET", f"{base}/usage?bucket=hour&group_by=model&from=0&to=7200")
        assert r.status_code == 200 and r.json()["bucket"] == "hour"
        r = await call("GET", f"{base}/usage?bucket=minute&from=0&to=864000")
        assert r.status_code == 400 and "bucket" in r.json()["error"]["message"]
        export = await call("GET", f"{base}/export")
        assert (await call("POST", f"{base}/rotate-secrets")).status_code == 201
        other = f"/v1/namespaces/{namespace}-copy"
        assert (await call("POST", f"{other}/import", content=export.content)).status_code == 201
        r = await call("POST", f"{other}/import", content=export.content)
        assert r.status_code == 409 and r.json()["error"]["current_version"] == 3
        # Rollouts: start, refuse a publish meanwhile, see, abort, promote.
        assert (await call("GET", f"{base}/rollout")).status_code == 404
        canary = {"patch": {"logging": {"level": "WARNING"}}, "message": "canary",
                  "stages": [{"selector": "tier=canary", "bake_s": 5}]}  # fmt: skip
        r = await call("POST", f"{base}/rollouts", json={**canary, "stages": [{"selector": "0%"}]})
        assert (
            r.status_code == 422 and r.json()["error"]["issues"][0]["path"] == "stages[0].selector"
        )
        assert (await call("POST", f"{base}/rollouts", json=canary)).status_code == 201
        r = await call("PUT", f"{base}/config", json={"document": doc})
        assert r.status_code == 409 and r.json()["error"]["code"] == "rollout_running"
        assert (await call("POST", f"{base}/rollouts", json=canary)).status_code == 409
        r = await call("GET", f"{base}/rollout")
        assert r.status_code == 200 and r.json()["assessment"]["action"] == "wait"
        r = await call("POST", f"{base}/rollout/abort", json={"message": "no"})
        assert r.status_code == 200 and r.json()["rollout"]["state"] == "aborted"
        assert (await call("POST", f"{base}/rollout/promote")).status_code == 409
        assert (await call("POST", f"{base}/rollouts", json=canary)).status_code == 201
        r = await call("POST", f"{base}/rollout/promote", headers=auth("sre"))
        assert r.status_code == 200 and r.json()["rollout"]["state"] == "promoted"
        r = await call("GET", "/v1/namespaces/a:b/config")
        assert r.status_code == 404
    await store.redis.aclose()

    limited = counter_key("publish", "paul")
    redis_server.client().delete(limited)
    async with client(app_for(redis_server.url, publish_limit=1)) as c:
        for status in (201, 429):
            r = await c.put(
                f"{base}-limited/config", headers=auth("publisher"), json={"document": doc}
            )
            assert r.status_code == status
            seen.add(check(r))
    redis_server.client().delete(limited)

    async with client(app_for("redis://127.0.0.1:1/0", redis_timeout_s=0.2)) as c:
        for url in ("/health/ready", f"{base}/config"):
            r = await c.get(url, headers=admin)
            assert r.status_code == 503
            seen.add(check(r))

    # Every operation was answered, with every status documented for some of them.
    assert {(m, p) for m, p, _ in seen} == set(OPERATIONS) - KEY_OPS
    assert {s for *_, s in seen} >= {200, 201, 400, 401, 403, 404, 409, 413, 422, 429, 502, 503}


async def test_key_routes_answer_every_documented_status(
    redis_server: RedisServer, namespace: str
) -> None:
    """Each client key route through each status its spec documents (a read's 403 aside:
    every role may read), every answer as documented."""
    seen: set[tuple[str, str, int]] = set()
    base = f"/v1/namespaces/{namespace}"
    keys, bad_ns = f"{base}/keys", "/v1/namespaces/a:b/keys"
    admin, viewer = auth("admin"), auth("viewer")
    big = {"name": "a", "metadata": {"x": "y" * 20_000}}

    async def call(
        c: httpx.AsyncClient, method: str, url: str, status: int, **kwargs: Any
    ) -> httpx.Response:
        kwargs.setdefault("headers", admin)
        r = await c.request(method, url, **kwargs)
        assert r.status_code == status, (method, url, r.text)
        seen.add(check(r))
        return r

    async with client(app_for(redis_server.url, max_body_bytes=16 * 1024)) as c:
        r = await call(c, "PUT", f"{base}/config", 201, json={"document": sample_data()})
        r = await call(c, "POST", keys, 201, json={"name": "alice", "team": "ml", "tags": ["a"]})
        one = f"{keys}/{r.json()['entry']['id']}"
        rev = r.json()["entry"]["revision"]
        missing, bad_id = f"{keys}/key_missing", f"{keys}/not-a-key"
        not_json = {"content": b"{", "headers": {**admin, "Content-Type": "application/json"}}
        # A document naming a key of the collection is refused.
        doc = sample_data()
        doc["clients"][0]["key_sha256"] = r.json()["entry"]["key_sha256"]
        r = await call(c, "PUT", f"{base}/config", 409, json={"document": doc})
        assert r.json()["error"]["code"] == "key_hash_in_collection"

        await call(c, "POST", keys, 400, **not_json)
        await call(c, "POST", keys, 401, headers={}, json={"name": "a"})
        await call(c, "POST", keys, 403, headers=viewer, json={"name": "a"})
        await call(c, "POST", bad_ns, 404, json={"name": "a"})
        doc_hash = key_sha256(SAMPLE_CLIENT_KEY)
        await call(c, "POST", keys, 409, json={"name": "a", "key_sha256": doc_hash})
        await call(c, "POST", keys, 413, json=big)
        await call(c, "POST", keys, 422, json={"name": "a", "models": ["ghost"]})

        r = await call(c, "GET", f"{keys}?team=ml&tag=a&count=10", 200)
        assert [k["name"] for k in r.json()["keys"]] == ["alice"]
        await call(c, "GET", f"{keys}?count=0", 400)
        await call(c, "GET", keys, 401, headers={})
        await call(c, "GET", bad_ns, 404)

        await call(c, "GET", one, 200)
        await call(c, "GET", bad_id, 400)
        await call(c, "GET", one, 401, headers={})
        await call(c, "GET", missing, 404)

        r = await call(
            c, "PATCH", one, 200, headers={**admin, "If-Match": f'"{rev}"'}, json={"tags": ["b"]}
        )
        rev = r.json()["revision"]
        await call(c, "PATCH", one, 400, headers={**admin, "If-Match": "x"}, json={"tags": []})
        await call(c, "PATCH", one, 401, headers={}, json={"tags": []})
        await call(c, "PATCH", one, 403, headers=viewer, json={"tags": []})
        await call(c, "PATCH", missing, 404, json={"tags": []})
        await call(c, "PATCH", one, 409, headers={**admin, "If-Match": '"1"'}, json={"tags": []})
        await call(c, "PATCH", one, 413, json=big)
        await call(c, "PATCH", one, 422, json={"budget": {"limit_usd": 1, "period": "week"}})

        rotate = f"{one}/rotate"
        r = await call(c, "POST", rotate, 200, json={"grace_s": 60})
        assert r.json()["key"].startswith("sk-cb-")
        await call(c, "POST", rotate, 400, headers={**admin, "If-Match": "x"})
        await call(c, "POST", rotate, 401, headers={})
        await call(c, "POST", rotate, 403, headers=viewer)
        await call(c, "POST", f"{missing}/rotate", 404)
        await call(c, "POST", rotate, 409, headers={**admin, "If-Match": f'"{rev}"'})
        await call(c, "POST", rotate, 413, json=big)
        await call(c, "POST", rotate, 422, json={"grace_s": -1})

        await call(c, "DELETE", bad_id, 400)
        await call(c, "DELETE", one, 401, headers={})
        await call(c, "DELETE", one, 403, headers=viewer)
        await call(c, "DELETE", missing, 404)
        await call(c, "DELETE", one, 409, headers={**admin, "If-Match": f'"{rev}"'})
        await call(c, "DELETE", one, 200)

    limited = counter_key("publish", "paul")
    redis_server.client().delete(limited)
    pub = auth("publisher")
    async with client(app_for(redis_server.url, publish_limit=1)) as c:
        r = await call(c, "POST", keys, 201, headers=pub, json={"name": "bob"})
        one = f"{keys}/{r.json()['entry']['id']}"
        await call(c, "POST", keys, 429, headers=pub, json={"name": "bob"})
        await call(c, "PATCH", one, 429, headers=pub, json={"tags": []})
        await call(c, "POST", f"{one}/rotate", 429, headers=pub)
        await call(c, "DELETE", one, 429, headers=pub)
    redis_server.client().delete(limited)

    async with client(app_for("redis://127.0.0.1:1/0", redis_timeout_s=0.2)) as c:
        for method, url in (("POST", keys), ("GET", keys), ("GET", one), ("PATCH", one),
                            ("POST", f"{one}/rotate"), ("DELETE", one)):  # fmt: skip
            body = {"json": {"name": "a"}} if method in ("POST", "PATCH") else {}
            await call(c, method, url, 503, **body)

    for method, path in KEY_OPS:
        documented = {int(s) for s in SPEC["paths"][path][method]["responses"]}
        if OPERATIONS[method, path].permission == "read":
            documented.discard(403)
        assert {s for m, p, s in seen if (m, p) == (method, path)} == documented, (method, path)


@pytest.mark.parametrize(
    "name", ["ErrorEnvelope", "VersionView", "PublishResult", "Replicas", "Export"]
)
def test_spec_schemas_are_the_structs(name: str) -> None:
    """The spec's schemas are msgspec's, not a retyped copy: every field is there."""
    import configbus.api
    import configbus.store

    struct = getattr(configbus.api, name, None) or getattr(configbus.store, name)
    fields = {f.encode_name for f in msgspec.structs.fields(struct)}
    assert set(SPEC["components"]["schemas"][name]["properties"]) == fields


def test_document_schema_is_the_real_one() -> None:
    schemas = SPEC["components"]["schemas"]
    publish = schemas["PublishRequest"]["properties"]["document"]
    assert publish["$ref"] == "#/components/schemas/Document"
    provider = schemas["Provider"]["properties"]
    assert provider["base_url"]["pattern"].startswith("^https?://")
    assert schemas["Document"]["additionalProperties"] is False
    assert json.dumps(SPEC)  # plain JSON values throughout


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("If-Match", '"1"'),
        ("If-Match", "1"),
        ("If-Match", 'W/"1"'),
        ("If-Match", "*"),
        ("If-Match", "abc"),
        ("If-Match", "-1"),
        ("If-Match", "1" * 17),
        ("Idempotency-Key", "retry-7f3a"),
        ("Idempotency-Key", "a key with spaces"),
        ("Idempotency-Key", "k" * 200),
        ("Idempotency-Key", "k" * 201),
        ("Idempotency-Key", b"caf\xe9"),
    ],
)
async def test_headers_accepted_are_the_documented_ones(
    redis_server: RedisServer, namespace: str, header: str, value: str | bytes
) -> None:
    """The code parses If-Match and Idempotency-Key with the patterns the spec shows."""
    param = next(
        p
        for p in SPEC["paths"]["/v1/namespaces/{ns}/config"]["put"]["parameters"]
        if p["name"] == header
    )
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    documented = re.fullmatch(param["schema"]["pattern"], text) is not None
    async with client(app_for(redis_server.url)) as c:
        r = await c.put(
            f"/v1/namespaces/{namespace}/config",
            headers={**auth("admin"), header: value},  # type: ignore[dict-item]
            json={"document": sample_data()},
        )
    assert (r.status_code != 400) == documented, r.text
