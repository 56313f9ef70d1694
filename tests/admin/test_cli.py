from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from configbus.cli import main
from configbus.codec import decode_body
from configbus.connection import connect
from configbus.document import Document
from configbus.settings import BusSettings
from configbus.store import ReplicaStatus, Store
from configbus.testing import sample_data
from configbus.watcher import Watcher
from tests.admin.helpers import TOKENS, app_for, serve
from tests.support import RedisServer


@pytest.fixture
def admin_url(redis_server: RedisServer) -> Iterator[str]:
    with serve(app_for(redis_server.url)) as url:
        yield url


def cli(url: str, ns: str, role: str, *args: str) -> list[str]:
    return [args[0], "--admin-url", url, "--token", TOKENS[role][1], "-n", ns, *args[1:]]


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def write(tmp_path: Path, name: str, data: Any) -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data) if name.endswith(".yaml") else json.dumps(data))
    return str(p)


def test_publish_get_history_diff_rollback(
    admin_url: str, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f1 = write(tmp_path, "v1.yaml", sample_data())
    code, out, err = run(
        capsys, cli(admin_url, namespace, "publisher", "publish", f1, "-m", "first")
    )
    assert code == 0 and "published: version 1" in out, err
    code, out, _ = run(capsys, cli(admin_url, namespace, "publisher", "publish", f1, "-m", "x"))
    assert code == 0 and "no change" in out

    data = sample_data()
    data["logging"] = {"level": "DEBUG"}
    f2 = write(tmp_path, "v2.json", data)
    code, out, err = run(
        capsys,
        cli(
            admin_url,
            namespace,
            "publisher",
            "publish",
            f2,
            "-m",
            "debug",
            "--if-match",
            "1",
            "--json",
        ),
    )
    assert code == 0 and json.loads(out)["version"] == 2
    code, out, err = run(
        capsys,
        cli(admin_url, namespace, "publisher", "publish", f1, "-m", "stale", "--if-match", "1"),
    )
    assert code == 1 and "current version is 2" in err and "--if-match 2" in err

    code, out, err = run(capsys, cli(admin_url, namespace, "viewer", "get"))
    assert code == 0 and json.loads(out)["logging"] == {"level": "DEBUG"}
    assert "version 2" in err and "sk-upstream" not in out

    patch = write(tmp_path, "p.json", {"metadata": {"team": "x"}})
    code, out, _ = run(capsys, cli(admin_url, namespace, "publisher", "patch", patch, "-m", "tag"))
    assert code == 0 and "patched: version 3" in out

    code, out, _ = run(capsys, cli(admin_url, namespace, "viewer", "history"))
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["VERSION", "KIND", "AUTHOR"]
    assert [ln.split()[0] for ln in lines[1:]] == ["3", "2", "1"]

    code, out, _ = run(capsys, cli(admin_url, namespace, "viewer", "diff", "1", "2"))
    assert code == 0 and out.startswith("--- version 1\n+++ version 2")
    assert '+    "level": "DEBUG"' in out

    code, out, err = run(
        capsys, cli(admin_url, namespace, "publisher", "rollback", "1", "-m", "no")
    )
    assert code == 1 and "may not rollback" in err
    code, out, err = run(capsys, cli(admin_url, namespace, "sre", "rollback", "1", "-m", "back"))
    assert code == 0 and "version 4" in out


def test_validate_offline_and_online(
    admin_url: str, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = sample_data()
    bad["providers"][0]["timeout_s"] = "slow"
    bad["models"][1]["deployments"][0]["provider"] = "ghost"
    fbad = write(tmp_path, "bad.yaml", bad)
    fgood = write(tmp_path, "good.yaml", sample_data())
    code, out, err = run(capsys, ["validate", fbad])  # no admin URL: offline
    assert code == 1 and "providers[0].timeout_s" in err
    code, out, err = run(capsys, ["validate", "--offline", fgood])
    assert code == 0 and "valid" in out
    code, out, err = run(capsys, cli(admin_url, namespace, "publisher", "validate", fbad))
    assert code == 1 and "providers[0].timeout_s" in err and "HTTP 422" in err
    code, out, err = run(capsys, cli(admin_url, namespace, "publisher", "validate", fgood))
    assert code == 0 and "valid" in out
    code, out, err = run(capsys, ["publish", fgood, "-m", "x"])
    assert code == 2 and "no admin URL" in err
    code, out, err = run(
        capsys, ["publish", fgood, "-m", "x", "--admin-url", "http://127.0.0.1:9", "--token", "t"]
    )
    assert code == 2 and "127.0.0.1:9" in err
    code, out, err = run(
        capsys,
        cli(
            admin_url, namespace, "publisher", "publish", str(tmp_path / "missing.yaml"), "-m", "x"
        ),
    )
    assert code == 2 and "missing.yaml" in err


def test_export_import(
    admin_url: str, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write(tmp_path, "v1.json", sample_data())
    assert run(capsys, cli(admin_url, namespace, "admin", "publish", f, "-m", "a"))[0] == 0
    out_file = str(tmp_path / "export.json")
    code, _, err = run(capsys, cli(admin_url, namespace, "viewer", "export", "-o", out_file))
    assert code == 0 and "1 version" in err
    assert "sk-upstream-secret-a" not in Path(out_file).read_text()
    code, out, err = run(capsys, cli(admin_url, namespace + "-b", "admin", "import", out_file))
    assert code == 0 and "head is version 1" in out, err
    code, out, err = run(capsys, cli(admin_url, namespace + "-b", "admin", "import", out_file))
    assert code == 1 and "not_empty" in err


def _rejecting_build(doc: Document, prev: Any) -> Document:
    if doc.logging.level == "DEBUG":
        raise ValueError("logging.level DEBUG is not allowed on this replica")
    return doc


async def _watchers(url: str, ns: str, n: int, *, picky: int = 0) -> list[Watcher[Any, Any]]:
    out = []
    for i in range(n):
        settings = BusSettings(
            redis_url=url,
            namespace=ns,
            replica_id=f"replica-{i}",
            heartbeat_interval_s=0.3,
            reconcile_interval_s=0.3,
        )
        store = Store(connect(url), ns)
        w: Watcher[Any, Any] = Watcher(
            store,
            decode=decode_body,
            build=_rejecting_build if i < picky else None,
            settings=settings,
            registry=CollectorRegistry(),
        )
        await w.start()
        out.append(w)
    return out


async def _cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, argv)
    out = capsys.readouterr()
    return code, out.out, out.err


async def test_rollback_converges_and_status_shows_rejects(
    redis_server: RedisServer, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with serve(app_for(redis_server.url)) as url:
        watchers = await _watchers(redis_server.url, namespace, 3, picky=1)
        try:
            f1 = write(tmp_path, "v1.json", sample_data())
            code, out, err = await _cli(
                capsys, cli(url, namespace, "publisher", "publish", f1, "-m", "v1")
            )
            assert code == 0, err
            code, out, err = await _cli(
                capsys,
                cli(url, namespace, "viewer", "watch", "--timeout", "10", "--min-replicas", "3"),
            )
            assert code == 0 and "converged: 3 live replica(s) run version 1" in out, out + err

            data = sample_data()
            data["logging"] = {"level": "DEBUG"}
            f2 = write(tmp_path, "v2.json", data)
            code, out, err = await _cli(
                capsys, cli(url, namespace, "publisher", "publish", f2, "-m", "debug")
            )
            assert code == 0, err
            code, out, err = await _cli(
                capsys,
                cli(url, namespace, "viewer", "watch", "--timeout", "10", "--interval", "0.1"),
            )
            assert code == 1, out + err
            assert "replica-0 rejected version 2" in err and "DEBUG is not allowed" in err

            code, out, err = await _cli(capsys, cli(url, namespace, "viewer", "status"))
            assert code == 0
            assert "NOT all on head" in out
            row = next(ln for ln in out.splitlines() if ln.startswith("replica-0"))
            assert "rejected version 2: logging.level DEBUG is not allowed" in row
            code, out, err = await _cli(capsys, cli(url, namespace, "viewer", "status", "--json"))
            summary = json.loads(out)["summary"]
            assert summary["per_version"] == {"1": 1, "2": 2} and summary["rejected"] == 1

            code, out, err = await _cli(
                capsys, cli(url, namespace, "sre", "rollback", "1", "-m", "undo debug")
            )
            assert code == 0 and "version 3" in out
            code, out, err = await _cli(
                capsys,
                cli(url, namespace, "viewer", "watch", "--timeout", "10", "--min-replicas", "3"),
            )
            assert code == 0, out + err
            assert all(w.current is not None and w.current.version == 3 for w in watchers)
        finally:
            for w in watchers:
                await w.stop()
                await w.store.redis.aclose()


async def test_watch_timeout_and_dead_replicas(
    redis_server: RedisServer, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = Store(connect(redis_server.url), namespace)
    try:
        with serve(app_for(redis_server.url)) as url:
            f1 = write(tmp_path, "v1.json", sample_data())
            assert (await _cli(capsys, cli(url, namespace, "admin", "publish", f1, "-m", "v1")))[
                0
            ] == 0
            await store.report(
                ReplicaStatus(replica_id="old", state="applied", version=0, ttl_s=30)
            )
            await store.report(
                ReplicaStatus(replica_id="gone", state="applied", version=1, ttl_s=0.01)
            )
            await asyncio.sleep(0.05)
            code, out, err = await _cli(
                capsys,
                cli(url, namespace, "viewer", "watch", "--timeout", "0.3", "--interval", "0.1"),
            )
            assert code == 2 and "timeout" in err
            code, out, err = await _cli(capsys, cli(url, namespace, "viewer", "status"))
            gone = next(ln for ln in out.splitlines() if ln.startswith("gone"))
            assert "DEAD" in gone
            assert "1 live, 1 dead" in out
    finally:
        await store.redis.aclose()


def test_get_yaml_round_trip_keeps_secrets_and_rotate(
    admin_url: str, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = write(tmp_path, "v1.json", sample_data())
    assert run(capsys, cli(admin_url, namespace, "admin", "publish", f, "-m", "a"))[0] == 0
    out_file = str(tmp_path / "current.yaml")
    assert run(capsys, cli(admin_url, namespace, "viewer", "get", "-o", out_file))[0] == 0
    masked = yaml.safe_load(Path(out_file).read_text())
    assert "masked" in masked["providers"][0]["api_key"]
    code, out, _ = run(
        capsys, cli(admin_url, namespace, "admin", "publish", out_file, "-m", "same")
    )
    assert code == 0 and "no change" in out
    code, out, _ = run(capsys, cli(admin_url, namespace, "admin", "rotate-secrets"))
    assert code == 0 and "version 2" in out
    code, out, err = run(capsys, cli(admin_url, namespace, "publisher", "rotate-secrets"))
    assert code == 1 and "may not rotate" in err
    code, out, _ = run(capsys, cli(admin_url, namespace, "viewer", "audit"))
    assert code == 0 and "rotate" in out and "forbidden" in out
