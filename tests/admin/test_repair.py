"""Issue 19, the admin can always repair: each damaged namespace state answers a clear error
(never a 500), `configbus status` says what is damaged, a publish by an admin brings the
namespace back to a valid head, and no version number is ever reused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from configbus.api import MAX_VERSION
from configbus.cli import main
from configbus.testing import sample_data
from tests.admin.helpers import TOKENS, app_for, auth, client, serve
from tests.support import RedisServer


def _k(ns: str, name: str) -> str:
    return f"cb:{{{ns}}}:{name}"


def _doc(level: str) -> dict[str, Any]:
    data = sample_data()
    data["logging"] = {"level": level}
    return {"document": data, "message": level}


async def _publish(c: httpx.AsyncClient, ns: str, level: str, **headers: str) -> httpx.Response:
    return await c.put(
        f"/v1/namespaces/{ns}/config", headers={**auth("admin"), **headers}, json=_doc(level)
    )


DAMAGE: dict[str, Callable[[Any, str], str]] = {
    "non-numeric head": lambda r, ns: r.set(_k(ns, "head"), "abc") and "not a version number",
    "negative head": lambda r, ns: r.set(_k(ns, "head"), "-3") and "not a version number",
    "huge head": lambda r, ns: r.set(_k(ns, "head"), str(2**60)) and "not a version number",
    "head at a missing record": lambda r, ns: r.set(_k(ns, "head"), "99") and "missing record",
    "head at a corrupt record": lambda r, ns: (
        r.hset(_k(ns, "v:3"), "body", b"{}") is not None and "checksum"
    ),
    "non-numeric seq": lambda r, ns: r.set(_k(ns, "seq"), "zz") and "",
}


@pytest.mark.parametrize("damage", list(DAMAGE))
async def test_damaged_state_is_a_clear_error_and_a_publish_repairs_it(
    redis_server: RedisServer, namespace: str, damage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = redis_server.client()
    base = f"/v1/namespaces/{namespace}"
    async with client(app_for(redis_server.url)) as c:
        for level in ("DEBUG", "INFO", "WARNING"):
            assert (await _publish(c, namespace, level)).status_code == 201
        bodies = {n: raw.hget(_k(namespace, f"v:{n}"), "sha256") for n in (1, 2, 3)}
        said = DAMAGE[damage](raw, namespace)
        for path in ("config", "replicas", "versions", "export", "audit"):
            r = await c.get(f"{base}/{path}", headers=auth("admin"))
            assert r.status_code < 500, (path, r.text)
            if r.status_code >= 400:
                assert r.status_code in (409, 422, 503), (path, r.text)
                assert said in r.json()["error"]["message"], (path, r.text)
        status = (await c.get(f"{base}/replicas", headers=auth("viewer"))).json()["summary"]
        if said and "corrupt" not in damage:  # a checksum is checked on reads of the body
            assert said in (status["damage"] or ""), status
        # With If-Match on a head that is not a number, the caller cannot mean it: refused.
        if "head" in damage and "missing" not in damage and "corrupt" not in damage:
            r = await _publish(c, namespace, "ERROR", **{"If-Match": "3"})
            assert r.status_code == 409, r.text
        r = await _publish(c, namespace, "ERROR")
        assert r.status_code == 201, r.text
        version = r.json()["version"]
        assert version > 3  # never a number in use
        assert (await c.get(f"{base}/config", headers=auth("viewer"))).json()["version"] == version
        status = (await c.get(f"{base}/replicas", headers=auth("viewer"))).json()["summary"]
        assert status["head"] == version and status["damage"] is None
        # The records published before the damage are untouched.
        if damage != "head at a corrupt record":
            for n, sha in bodies.items():
                assert raw.hget(_k(namespace, f"v:{n}"), "sha256") == sha


async def test_a_head_moved_back_with_a_lost_counter_never_overwrites_a_record(
    redis_server: RedisServer, namespace: str
) -> None:
    raw = redis_server.client()
    async with client(app_for(redis_server.url)) as c:
        for level in ("DEBUG", "INFO", "WARNING"):
            assert (await _publish(c, namespace, level)).status_code == 201
        kept = {n: raw.hgetall(_k(namespace, f"v:{n}")) for n in (1, 2, 3)}
        raw.set(_k(namespace, "head"), "1")
        raw.delete(_k(namespace, "seq"))
        r = await _publish(c, namespace, "ERROR")
        assert r.status_code == 201 and r.json()["version"] == 4, r.text
        assert {n: raw.hgetall(_k(namespace, f"v:{n}")) for n in (1, 2, 3)} == kept
        # A record beyond the history index (left by damage) is not overwritten either.
        raw.hset(_k(namespace, "v:5"), mapping={"version": "5", "body": "stray"})
        r = await _publish(c, namespace, "CRITICAL")
        assert r.status_code == 201 and r.json()["version"] == 6, r.text
        assert raw.hget(_k(namespace, "v:5"), "body") == b"stray"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e["records"][0].update(version=2**60), "version"),
        (lambda e: e.update(head=2**60), "head"),
        (lambda e: e["records"][0].update(parent=2**60), "parent"),
        (lambda e: e["records"].append(dict(e["records"][0])), "twice"),
    ],
)
async def test_import_validates_numbers_and_writes_all_or_nothing(
    redis_server: RedisServer, namespace: str, change: Callable[[Any], None], message: str
) -> None:
    raw = redis_server.client()
    async with client(app_for(redis_server.url)) as c:
        assert (await _publish(c, namespace, "DEBUG")).status_code == 201
        export = (await c.get(f"/v1/namespaces/{namespace}/export", headers=auth("admin"))).json()
        target = namespace + "-copy"
        change(export)
        r = await c.post(f"/v1/namespaces/{target}/import", headers=auth("admin"), json=export)
        assert r.status_code == 422, r.text
        assert message in r.json()["error"]["message"]
        written = {k.decode() for k in raw.keys(f"cb:{{{target}}}:*")}
        assert written <= {f"cb:{{{target}}}:audit"}, "a refused import wrote keys"
        r = await c.get(f"/v1/namespaces/{target}/config", headers=auth("admin"))
        assert r.status_code == 404
    assert MAX_VERSION == 2**53


def test_cli_status_says_what_is_damaged(
    redis_server: RedisServer, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_server.client().set(_k(namespace, "head"), "abc")
    with serve(app_for(redis_server.url)) as url:
        code = main(["status", "--admin-url", url, "--token", TOKENS["viewer"][1], "-n", namespace])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "DAMAGED" in out.out and "not a version number" in out.out
