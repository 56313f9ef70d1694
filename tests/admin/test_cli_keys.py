"""`configbus keys ...` against a real admin service (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from configbus.cli.keys import import_id
from configbus.connection import connect
from configbus.keystore import KeyStore, hash_key
from configbus.store import Store
from configbus.testing import SAMPLE_CLIENT_KEY, key_sha256, sample_data
from tests.admin.helpers import TOKENS, app_for, serve
from tests.admin.test_cli import run, write
from tests.support import RedisServer


@pytest.fixture
def admin_url(redis_server: RedisServer) -> Iterator[str]:
    with serve(app_for(redis_server.url)) as url:
        yield url


def keys(url: str, ns: str, role: str, action: str, *rest: str) -> list[str]:
    return ["keys", action, "--admin-url", url, "--token", TOKENS[role][1], "-n", ns, *rest]


def test_create_list_show_update_rotate_revoke(
    admin_url: str, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def k(action: str, *rest: str, role: str = "publisher") -> tuple[int, str, str]:
        return run(capsys, keys(admin_url, namespace, role, action, *rest))

    code, out, err = k("create", "alice", "--team", "ml", "--tag", "dev", "--rpm", "60",
                       "--budget", "25", "--budget-period", "day", "--meta", "owner=ana")  # fmt: skip
    assert code == 0, err
    assert "shown this once" in err
    key = out.split("key: ")[1].split()[0]
    key_id = out.split()[2]
    assert key.startswith("sk-cb-") and key_id.startswith("key_")

    code, out, _ = k("list", role="viewer")
    assert code == 0 and key_id in out and "alice" in out and "enabled" in out
    assert key not in out
    code, out, _ = k("list", "--team", "nobody", role="viewer")
    assert code == 0 and out.strip() == "no keys"
    code, out, _ = k("show", key_id, "--json", role="viewer")
    shown = json.loads(out)
    assert shown["key_sha256"] == hash_key(key) and shown["rate_limit"] == {"rpm": 60}
    assert shown["budget"] == {"limit_usd": 25.0, "period": "day"}
    assert shown["metadata"] == {"owner": "ana"}

    code, out, err = k("update", key_id, "--no-team", "--tag", "prod", "--if-match", "9")
    assert code == 1 and "revision_conflict" in err and "revision is now 1" in err
    code, out, err = k("update", key_id, "--no-team", "--tag", "prod", "--if-match", "1")
    assert code == 0 and "revision 2" in out, err
    code, out, err = k("update", key_id, "--no-team", "--team", "x")
    assert code == 2 and "pick one" in err
    code, out, err = k("create", "bob", "--key-sha256", "XYZ")
    assert code == 2 and "key_sha256" in err
    code, out, err = k("create", "bob", "--model", "ghost", role="viewer")
    assert code == 1 and "may not key.create" in err

    code, out, err = k("rotate", key_id, "--grace", "10m")
    assert code == 0, err
    new = out.split("key: ")[1].split()[0]
    assert new != key and "works 600s more" in out
    code, out, _ = k("show", key_id, "--json", role="viewer")
    assert json.loads(out)["previous_sha256"] == hash_key(key)

    code, out, err = k("revoke", key_id)
    assert code == 0 and f"revoked key {key_id}" in out, err
    code, out, err = k("show", key_id, role="viewer")
    assert code == 1 and "key_not_found" in err


async def test_import_moves_the_documents_clients_and_resumes(
    admin_url: str,
    redis_server: RedisServer,
    namespace: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doc = sample_data()
    doc["clients"].append(
        {"name": "team-b", "key_sha256": key_sha256("sk-b"), "models": ["m"], "enabled": False}
    )
    f = write(tmp_path, "doc.json", doc)
    code, _, err = await asyncio.to_thread(
        run, capsys, ["publish", f, "-m", "v1", "--admin-url", admin_url,
                      "--token", TOKENS["publisher"][1], "-n", namespace],
    )  # fmt: skip
    assert code == 0, err
    ks = KeyStore(connect(redis_server.url), namespace)
    store = Store(ks.redis, namespace)
    # As if a first run stopped after moving team-a: it is found, not created twice.
    a_hash = key_sha256(SAMPLE_CLIENT_KEY)
    await ks.create(id=import_id(a_hash), name="team-a", key_sha256=a_hash)

    argv = keys(admin_url, namespace, "publisher", "import", "--dry-run")
    code, out, _ = await asyncio.to_thread(run, capsys, argv)
    assert code == 0 and "would move client 'team-b'" in out
    assert (await store.head()).version == 1

    argv = keys(admin_url, namespace, "publisher", "import")
    code, out, err = await asyncio.to_thread(run, capsys, argv)
    assert code == 0, err
    assert "'team-a': already imported" in out and "'team-b': created" in out
    assert "published version 2" in out
    b = await ks.find(key_sha256("sk-b"))
    assert b is not None and b.name == "team-b" and b.models == ("m",) and not b.enabled
    assert b.metadata == {"imported_from": "document version 1"}
    _, head = await store.fetch_head()
    assert head is not None and head.version == 2 and b'"clients"' not in head.body
    # The entry existed before the document lost its client: never a moment without it.
    assert b.created_at < head.created_at

    code, out, _ = await asyncio.to_thread(run, capsys, argv)
    assert code == 0 and "nothing to import" in out
    await ks.redis.aclose()
