"""The client key endpoints: a key is shown once, a hash lives in one place, bodies are
checked field by field, changes are optimistic and audited once, pages cover the
collection."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from configbus.connection import connect
from configbus.keystore import KeyStore, hash_key
from configbus.testing import SAMPLE_CLIENT_KEY, key_sha256, sample_data
from tests.admin.helpers import app_for, auth, client
from tests.support import RedisServer

ADMIN, PUB = auth("admin"), auth("publisher")


@pytest.fixture
async def c(redis_server: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    async with client(app_for(redis_server.url)) as c:
        yield c


def keys_url(ns: str, rest: str = "") -> str:
    return f"/v1/namespaces/{ns}/keys{rest}"


async def create(c: httpx.AsyncClient, ns: str, **body: Any) -> dict[str, Any]:
    r = await c.post(keys_url(ns), headers=PUB, json=body)
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()
    return data


async def audit(c: httpx.AsyncClient, ns: str, action: str) -> list[dict[str, Any]]:
    r = await c.get(f"/v1/namespaces/{ns}/audit?action={action}", headers=ADMIN)
    entries: list[dict[str, Any]] = r.json()["entries"]
    return entries


async def test_a_generated_key_is_shown_once_and_audited_once(
    c: httpx.AsyncClient, namespace: str
) -> None:
    made = await create(c, namespace, name="alice", team="ml", tags=["dev"])
    key, entry = made["key"], made["entry"]
    assert key.startswith("sk-cb-") and entry["key_sha256"] == hash_key(key)
    assert entry["key_prefix"] == key[:10] and entry["team"] == "ml"
    shown = await c.get(keys_url(namespace, f"/{entry['id']}"), headers=auth("viewer"))
    assert shown.status_code == 200 and shown.headers["etag"] == f'"{entry["revision"]}"'
    listed = await c.get(keys_url(namespace), headers=auth("viewer"))
    for r in (shown, listed):
        assert key not in r.text and key[10:] not in r.text
    entries = await audit(c, namespace, "key.create")
    assert len(entries) == 1  # the change script's entry, not a second from the endpoint
    e = entries[0]
    assert (e["actor"], e["outcome"], e["fields"]["key_id"]) == ("paul", "ok", entry["id"])
    assert e["fields"]["detail"] == "name=alice key=generated"
    assert key[10:] not in str(entries)


async def test_a_hash_lives_in_one_place(c: httpx.AsyncClient, namespace: str) -> None:
    base = f"/v1/namespaces/{namespace}"
    assert (await c.put(f"{base}/config", headers=PUB, json={"document": sample_data()})).is_success
    doc_hash = key_sha256(SAMPLE_CLIENT_KEY)
    r = await c.post(keys_url(namespace), headers=PUB, json={"name": "a", "key_sha256": doc_hash})
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_hash_in_document"
    mine = "ab" * 32
    await create(c, namespace, name="mine", key_sha256=mine)
    r = await c.post(keys_url(namespace), headers=PUB, json={"name": "b", "key_sha256": mine})
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_hash_taken"
    # A document naming a hash of the collection is not published, whole or patched.
    doc = sample_data()
    doc["clients"].append({"name": "dup", "key_sha256": mine})
    r = await c.put(f"{base}/config", headers=PUB, json={"document": doc})
    err = r.json()["error"]
    assert r.status_code == 409 and err["code"] == "key_hash_in_collection"
    assert err["issues"][0]["path"] == "clients[1].key_sha256"
    patch = {"clients": doc["clients"]}
    r = await c.patch(f"{base}/config", headers=PUB, json=patch)
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_hash_in_collection"
    assert (await c.get(f"{base}/config", headers=ADMIN)).json()["version"] == 1
    # Adopting the document's client (what `keys import` does) is allowed.
    adopted = await create(c, namespace, name="team-a", key_sha256=doc_hash, adopt=True)
    assert adopted["key"] is None and adopted["entry"]["key_sha256"] == doc_hash
    r = await c.patch(f"{base}/config", headers=PUB, json={"clients": []})
    assert r.status_code == 201, r.text
    # Version 1 named the key in its clients: rolling back to it would put it in two places.
    r = await c.post(f"{base}/rollback", headers=ADMIN, json={"to_version": 1})
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_hash_in_collection"
    rollout = {"document": sample_data(), "stages": [{"selector": "tier=canary"}]}
    r = await c.post(f"{base}/rollouts", headers=PUB, json=rollout)
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_hash_in_collection"
    assert (await c.get(f"{base}/config", headers=ADMIN)).json()["version"] == 2


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"name": "a", "colour": "red"}, "colour"),
        ({"name": "a", "id": "nope"}, "id"),
        ({"name": "a", "key_sha256": "ABC"}, "key_sha256"),
        ({"name": "bad name"}, "name"),
        ({"name": "a", "models": []}, "models"),
        ({"name": "a", "models": ["ghost"]}, "models[0]"),
        ({"name": "a", "models": ["m", "*", "nope"]}, "models[2]"),
        ({"name": "a", "budget": {"limit_usd": 5, "period": "week"}}, "budget.period"),
        ({"name": "a", "budget": {"limit_usd": -1}}, "budget.limit_usd"),
        ({"name": "a", "rate_limit": {}}, "rate_limit"),
        ({"name": "a", "rate_limit": {"rpm": "fast"}}, "rate_limit.rpm"),
        ({"name": "a", "tags": [""]}, "tags[0]"),
        ({"name": "a", "adopt": True}, "adopt"),
    ],
)
async def test_a_bad_body_is_refused_naming_the_field(
    c: httpx.AsyncClient, namespace: str, body: dict[str, Any], path: str
) -> None:
    await c.put(f"/v1/namespaces/{namespace}/config", headers=PUB, json={"document": sample_data()})
    r = await c.post(keys_url(namespace), headers=PUB, json=body)
    assert r.status_code == 422, r.text
    issue = r.json()["error"]["issues"][0]
    # (msgspec names an unknown field in the message, at the object's path)
    assert issue["path"] == path or (issue["path"] == "" and f"'{path}'" in issue["message"])
    assert (await c.get(keys_url(namespace), headers=ADMIN)).json()["keys"] == []


async def test_update_is_optimistic_and_null_clears(c: httpx.AsyncClient, namespace: str) -> None:
    entry = (await create(c, namespace, name="a", team="ml", models=["*"]))["entry"]
    url = keys_url(namespace, f"/{entry['id']}")
    r = await c.patch(url, headers={**PUB, "If-Match": '"99"'}, json={"enabled": False})
    err = r.json()["error"]
    assert r.status_code == 409 and err["code"] == "revision_conflict"
    assert err["current_revision"] == entry["revision"]
    r = await c.patch(
        url,
        headers={**PUB, "If-Match": f'"{entry["revision"]}"'},
        json={"team": None, "tags": ["x"], "rate_limit": {"rpm": 5}},
    )
    assert r.status_code == 200, r.text
    got = r.json()
    assert "team" not in got and got["tags"] == ["x"] and got["rate_limit"] == {"rpm": 5}
    assert r.headers["etag"] == f'"{got["revision"]}"' and got["revision"] > entry["revision"]
    for bad, path in (({"id": "key_x"}, "id"), ({"key_sha256": "a" * 64}, "key_sha256")):
        r = await c.patch(url, headers=PUB, json=bad)
        assert r.status_code == 422 and f"'{path}'" in r.json()["error"]["issues"][0]["message"]
    assert (await c.patch(url, headers=PUB, json={})).status_code == 422
    r = await c.patch(keys_url(namespace, "/key_missing"), headers=PUB, json={"enabled": False})
    assert r.status_code == 404 and r.json()["error"]["code"] == "key_not_found"
    r = await c.patch(keys_url(namespace, "/bad%20id"), headers=PUB, json={"enabled": False})
    assert r.status_code == 400
    entries = await audit(c, namespace, "key.update")  # each once, refusals too
    assert [e["outcome"] for e in entries] == [
        "bad_request", "key_not_found", "invalid_key", "invalid_request", "invalid_request",
        "ok", "revision_conflict",
    ]  # fmt: skip
    assert entries[5]["fields"]["detail"] == "fields=rate_limit,tags,team"


async def test_rotate_answers_the_new_key_once_and_keeps_the_old_for_its_grace(
    c: httpx.AsyncClient, namespace: str
) -> None:
    made = await create(c, namespace, name="a")
    old, entry = made["key"], made["entry"]
    url = keys_url(namespace, f"/{entry['id']}/rotate")
    r = await c.post(url, headers=PUB, json={"grace_s": 91 * 86400})
    assert r.status_code == 422 and r.json()["error"]["issues"][0]["path"] == "grace_s"
    before = time.time()
    r = await c.post(url, headers=PUB, json={"grace_s": 600})
    assert r.status_code == 200, r.text
    new, rotated = r.json()["key"], r.json()["entry"]
    assert new != old and rotated["key_sha256"] == hash_key(new)
    assert rotated["previous_sha256"] == hash_key(old)
    assert before + 600 <= rotated["previous_expires_at"] <= time.time() + 600
    assert r.headers["location"].endswith(f"/keys/{entry['id']}")
    r = await c.post(url, headers={**PUB, "If-Match": f'"{entry["revision"]}"'})
    assert r.status_code == 409 and r.json()["error"]["code"] == "revision_conflict"


async def test_revoke_removes_the_key(c: httpx.AsyncClient, namespace: str) -> None:
    entry = (await create(c, namespace, name="a"))["entry"]
    url = keys_url(namespace, f"/{entry['id']}")
    r = await c.delete(url, headers=auth("sre"))
    assert r.status_code == 403  # roles as for publishing: an sre may not
    r = await c.delete(url, headers=PUB)
    assert r.status_code == 200 and r.json() == {"id": entry["id"], "revision": 2}
    assert (await c.get(url, headers=ADMIN)).status_code == 404
    assert (await c.delete(url, headers=PUB)).status_code == 404
    entries = await audit(c, namespace, "key.revoke")
    assert [e["outcome"] for e in entries] == ["key_not_found", "ok", "forbidden"]
    assert entries[1]["fields"]["revision"] == "2"


async def test_pages_cover_the_collection_once_and_filters_apply(
    c: httpx.AsyncClient, redis_server: RedisServer, namespace: str
) -> None:
    ks = KeyStore(connect(redis_server.url), namespace)
    for i in range(300):  # enough that Redis keeps the hash as a table, scanned in steps
        await ks.create(name=f"k{i}", team="even" if i % 2 == 0 else "odd", tags=(f"t{i % 3}",))
    await ks.redis.aclose()

    async def all_pages(query: str) -> tuple[list[str], int]:
        ids: list[str] = []
        cursor, pages = "", 0
        while True:
            r = await c.get(keys_url(namespace, f"?count=40{query}{cursor}"), headers=ADMIN)
            assert r.status_code == 200, r.text
            page = r.json()
            assert len(page["keys"]) <= 40
            ids += [k["id"] for k in page["keys"]]
            pages += 1
            if page["next_cursor"] is None:
                return ids, pages
            cursor = f"&cursor={page['next_cursor']}"

    ids, pages = await all_pages("")
    assert len(ids) == len(set(ids)) == 300 and pages >= 8
    even, _ = await all_pages("&team=even")
    assert len(set(even)) == 150
    tagged, _ = await all_pages("&team=odd&tag=t0")
    assert len(set(tagged)) == 50
    r = await c.get(keys_url(namespace, "?cursor=abc"), headers=ADMIN)
    assert r.status_code == 400 and "cursor" in r.json()["error"]["message"]


async def test_a_refusal_the_change_script_audits_is_audited_once(
    c: httpx.AsyncClient, namespace: str
) -> None:
    await create(c, namespace, name="a", id="key_fixed")
    r = await c.post(keys_url(namespace), headers=PUB, json={"name": "b", "id": "key_fixed"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "key_exists"
    entries = await audit(c, namespace, "key.create")
    assert [e["outcome"] for e in entries] == ["exists", "ok"]  # the script's, not twice
