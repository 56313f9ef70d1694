from __future__ import annotations

from typing import Any

import httpx
import pytest

from admin.audit import AUDITED_READS, DENIED_KEY
from admin.auth import PERMISSIONS, TokenTable
from admin.settings import AdminSettings, hash_token, parse_token
from configbus.errors import SettingsError
from configbus.testing import sample_data
from tests.admin.helpers import TOKENS, app_for, auth, client, settings
from tests.support import RedisServer

# (action, permission, method, path under the namespace, JSON body)
ENDPOINTS: list[tuple[str, str, str, str, Any]] = [
    ("get", "read", "GET", "config", None),
    ("publish", "publish", "PUT", "config", {"document": sample_data(), "message": "same"}),
    ("patch", "publish", "PATCH", "config", {}),
    ("validate", "validate", "POST", "validate", {"document": sample_data()}),
    ("versions", "read", "GET", "versions", None),
    ("version", "read", "GET", "versions/1", None),
    ("diff", "read", "GET", "diff?from=1&to=1", None),
    ("rollback", "rollback", "POST", "rollback", {"to_version": 1, "message": "back"}),
    ("replicas", "read", "GET", "replicas", None),
    ("audit", "read", "GET", "audit", None),
    ("export", "read", "GET", "export", None),
    (
        "import",
        "import",
        "POST",
        "import",
        {"namespace": "x", "epoch": "e", "head": 1, "records": []},
    ),
    ("rotate", "rotate", "POST", "rotate-secrets", {"message": "rotate"}),
]
BAD_AUTH = {
    "no-token": {},
    "wrong-token": {"Authorization": "Bearer not-a-real-token"},
    "wrong-scheme": {"Authorization": f"Basic {TOKENS['admin'][1]}"},
}


def audit_len(redis_server: RedisServer, ns: str) -> int:
    return int(redis_server.client().xlen(f"cb:{{{ns}}}:audit"))


def denied_len(redis_server: RedisServer) -> int:
    return int(redis_server.client().xlen(DENIED_KEY))


async def _seed(c: httpx.AsyncClient, ns: str) -> None:
    r = await c.put(
        f"/v1/namespaces/{ns}/config",
        headers=auth("admin"),
        json={"document": sample_data(), "message": "seed"},
    )
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("role", [*PERMISSIONS, *BAD_AUTH])
async def test_role_matrix_and_where_each_action_is_audited(
    role: str, redis_server: RedisServer, namespace: str
) -> None:
    """An allowed action that changes or checks something: one entry in the namespace's
    history; a refusal: one entry in the shared denied stream, none in the namespace's; a
    successful read (but export): no entry at all."""
    app = app_for(redis_server.url, publish_limit=10_000)
    headers = auth(role) if role in PERMISSIONS else BAD_AUTH[role]
    async with client(app) as c:
        await _seed(c, namespace)
        for action, permission, method, path, body in ENDPOINTS:
            before, denied_before = audit_len(redis_server, namespace), denied_len(redis_server)
            r = await c.request(
                method, f"/v1/namespaces/{namespace}/{path}", headers=headers, json=body
            )
            where = f"{role} {method} {path}"
            refused = True
            if role not in PERMISSIONS:
                assert r.status_code == 401, where
                assert r.headers["www-authenticate"] == "Bearer"
            elif permission in PERMISSIONS[role]:  # type: ignore[index,unused-ignore]
                assert r.status_code not in (401, 403), f"{where}: {r.text}"
                assert r.status_code < 500, f"{where}: {r.text}"
                refused = False
            else:
                assert r.status_code == 403, where
                assert r.json()["error"]["code"] == "forbidden"
            assert set(r.json()) == {"error"} or r.status_code < 400
            key = DENIED_KEY if refused else f"cb:{{{namespace}}}:audit"
            if refused:
                assert denied_len(redis_server) == denied_before + 1, f"{where}: denied entries"
                assert audit_len(redis_server, namespace) == before, f"{where}: history grew"
            elif permission == "read" and action not in AUDITED_READS:
                assert audit_len(redis_server, namespace) == before, f"{where}: read audited"
                continue
            else:
                assert audit_len(redis_server, namespace) == before + 1, f"{where}: audit entries"
            rows: Any = redis_server.client().xrevrange(key, count=1)
            entry = rows[0][1]
            actor = TOKENS[role][0] if role in PERMISSIONS else "anonymous"
            assert entry[b"actor"].decode() == actor, where
            assert entry[b"action"].decode() == action, where


async def test_denied_entries_name_the_token_never_the_secret(
    redis_server: RedisServer, namespace: str
) -> None:
    async with client(app_for(redis_server.url)) as c:
        r = await c.post(
            f"/v1/namespaces/{namespace}/rollback", headers=auth("viewer"), json={"to_version": 1}
        )
        assert r.status_code == 403
        r = await c.get(f"/v1/namespaces/{namespace}/audit", headers=auth("viewer"))
    entries = r.json()["entries"]
    denied = [e for e in entries if e["outcome"] == "forbidden"]
    assert denied and denied[0]["actor"] == "vera" and denied[0]["action"] == "rollback"
    raw = str(redis_server.client().xrange(f"cb:{{{namespace}}}:audit"))
    for _, token in TOKENS.values():
        assert token not in raw and token not in r.text


def test_tokens_are_held_as_hashes_and_matched() -> None:
    s = settings("redis://127.0.0.1:1/0")
    assert all(len(t.sha256) == 64 for t in s.tokens)
    assert all(tok not in repr(s) for _, tok in TOKENS.values())
    table = TokenTable(s.tokens)
    found = table.lookup(f"Bearer {TOKENS['sre'][1]}")
    assert found is not None and found.name == "sam" and found.role == "sre"
    assert table.lookup("Bearer nope") is None
    assert table.lookup(None) is None
    pre = parse_token(f"x:viewer:sha256:{hash_token('prehashed-token')}", "test")
    assert TokenTable([pre]).lookup("bearer prehashed-token") == pre


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no admin token configured"),
        ({"CONFIGBUS_ADMIN_TOKENS": "a:root:secret-token"}, "role 'root'"),
        ({"CONFIGBUS_ADMIN_TOKENS": "a:viewer"}, "expected 'name:role:token'"),
        ({"CONFIGBUS_ADMIN_TOKENS": "a:viewer:sha256:xyz"}, "64 hex digits"),
        ({"CONFIGBUS_ADMIN_TOKENS": "a:viewer:short"}, "too short"),
        ({"CONFIGBUS_ADMIN_TOKENS": "a:viewer:token-one-1,a:admin:token-two-2"}, "duplicate"),
        ({"CONFIGBUS_ADMIN_TOKENS_FILE": "/nonexistent/tokens"}, "cannot read"),
    ],
)
def test_bad_token_settings_say_why(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        AdminSettings.from_env(env)
    assert "token-one" not in str(info.value) and "secret-token" not in str(info.value)


def test_tokens_file(tmp_path: Any) -> None:
    f = tmp_path / "tokens"
    f.write_text("# comment\n\nops:sre:file-token-123\n")
    s = AdminSettings.from_env({"CONFIGBUS_ADMIN_TOKENS_FILE": str(f)})
    assert [(t.name, t.role) for t in s.tokens] == [("ops", "sre")]


def test_admin_command_refuses_to_start_without_tokens(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from configbus.cli import main

    monkeypatch.delenv("CONFIGBUS_ADMIN_TOKENS", raising=False)
    monkeypatch.delenv("CONFIGBUS_ADMIN_TOKENS_FILE", raising=False)
    assert main(["admin", "--port", "1"]) == 2
    err = capsys.readouterr().err
    assert "no admin token configured" in err and "CONFIGBUS_ADMIN_TOKENS" in err
