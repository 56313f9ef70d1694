"""The rollout CLI (`publish --canary`, `rollout status|promote|abort`, `watch`, `status`,
`rollback` during a rollout) against the real admin (its driver running) on a real Redis,
with in-process replicas whose labels and traffic the test sets."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from configbus.cli import main
from configbus.cli.args import duration_arg, rate_arg
from configbus.codec import decode_body
from configbus.document import Document
from configbus.testing import sample_data
from configbus.watcher import Watcher
from tests.admin.helpers import app_for, serve
from tests.admin.test_cli import cli, write
from tests.admin.test_rollout_driver import Fleet, on
from tests.core.helpers import make_store
from tests.core.test_watcher import settings, stack, until
from tests.support import RedisServer, free_port

__all__ = ["stack"]


class Env:
    """The admin's URL, the namespace, three replicas (c1 is `tier=canary`) and the CLI."""

    def __init__(self, url: str, ns: str, fleet: Fleet, capsys: pytest.CaptureFixture[str]):
        self.url, self.ns, self.fleet, self.capsys = url, ns, fleet, capsys

    async def cb(self, role: str, *args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(main, cli(self.url, self.ns, role, *args))
        out = self.capsys.readouterr()
        return code, out.out, out.err

    async def on_everywhere(self, version: int) -> None:
        ws = self.fleet.watchers.values()
        await until(lambda: all(on(w, version) for w in ws), 5, f"v{version} everywhere")

    def serve(self, rid: str, requests: int, errors: int = 0) -> None:
        self.fleet.serve(rid, requests, errors)


@pytest.fixture
async def env(
    redis_server: RedisServer,
    namespace: str,
    stack: AsyncExitStack,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> AsyncIterator[Env]:
    url = redis_server.url
    with serve(app_for(url)) as admin:
        fleet = Fleet(stack, url, namespace)
        await fleet.add("c1", tier="canary")
        await fleet.add("s1", zone="eu")
        await fleet.add("s2")
        e = Env(admin, namespace, fleet, capsys)
        v1 = write(tmp_path, "v1.json", sample_data())
        assert (await e.cb("publisher", "publish", v1, "-m", "v1"))[0] == 0
        await e.on_everywhere(1)
        yield e


def changed(tmp_path: Path, level: str = "WARNING") -> str:
    data = sample_data()
    data["logging"] = {"level": level}
    return write(tmp_path, f"{level}.yaml", data)


async def test_a_failing_canary_aborts_by_itself_and_watch_exits_1(
    env: Env, tmp_path: Path
) -> None:
    code, out, err = await env.cb(
        "publisher", "publish", changed(tmp_path), "-m", "quieter logs",
        "--canary", "tier=canary", "--bake", "10s", "--min-requests", "10",
    )  # fmt: skip
    assert code == 0, err
    assert "rollout ro-" in out and "version 2" in out and "head stays version 1" in out
    assert "stage 1: tier=canary, bake 10s" in out
    c1 = env.fleet.watchers["c1"]
    await until(lambda: on(c1, 2), 5, "canary on v2")

    code, out, _ = await env.cb("viewer", "status")
    assert code == 0 and "2 (rollout)  1" in out and "1 (head)     2" in out, out
    canary = next(ln for ln in out.splitlines() if ln.startswith("c1"))
    assert "tier=canary" in canary and "staged (a rollout's version)" in canary
    assert "zone=eu" in next(ln for ln in out.splitlines() if ln.startswith("s1"))
    rows = json.loads((await env.cb("viewer", "status", "--json"))[1])["replicas"]
    assert {r["replica_id"]: (r["labels"], r["staged"]) for r in rows} == {
        "c1": ({"tier": "canary"}, True),
        "s1": ({"zone": "eu"}, False),
        "s2": ({}, False),
    }

    code, out, _ = await env.cb("viewer", "rollout", "status")
    assert code == 0 and "state:    running at stage 1 of 1 (tier=canary, bake 10s)" in out
    assert "verdict:  wait: stage 1: 0 of 10 requests seen" in out, out

    env.serve("c1", 30, errors=30)
    env.serve("s1", 30)
    env.serve("s2", 30)
    code, out, err = await env.cb("viewer", "watch", "--interval", "0.1")
    assert code == 1, out + err
    assert "aborted at stage 1 of 1: stage 1 error rate 100% vs baseline 0% over 30" in err
    assert "its replicas are back on version 1" in err
    await env.on_everywhere(1)

    code, out, _ = await env.cb("viewer", "rollout", "status")
    assert "state:    ABORTED at stage 1 of 1" in out
    assert "reason:   stage 1 error rate 100% vs baseline 0% over 30 requests" in out
    # Watched again later, the aborted rollout is still the latest change.
    assert (await env.cb("viewer", "watch"))[0] == 1


async def test_a_healthy_canary_is_promoted_and_watch_exits_0(env: Env, tmp_path: Path) -> None:
    code, out, err = await env.cb(
        "publisher", "publish", changed(tmp_path), "-m", "quieter logs",
        "--canary", "tier=canary", "--canary", "100%", "--bake", "500ms", "--min-requests", "5",
    )  # fmt: skip
    assert code == 0 and "stage 2: 100%, bake 0.5s" in out, out + err
    await until(lambda: on(env.fleet.watchers["c1"], 2), 5, "canary on v2")

    async def traffic() -> None:  # steady load on whatever each replica runs
        while True:
            for rid in env.fleet.watchers:
                env.serve(rid, 5)
            await asyncio.sleep(0.1)

    load = asyncio.create_task(traffic())
    try:
        code, out, err = await env.cb("viewer", "watch", "--interval", "0.1", "--json")
    finally:
        load.cancel()
    assert code == 0, out + err
    result = json.loads(out)
    assert result["result"] == "converged" and result["rollout"]["rollout"]["state"] == "promoted"
    assert result["summary"]["per_version"] == {"2": 3}
    await env.on_everywhere(2)
    code, out, _ = await env.cb("viewer", "watch")
    assert code == 0 and "promoted" in out and "converged: 3 live replica(s) run version 2" in out


async def test_watch_times_out_and_a_person_aborts_or_promotes(env: Env, tmp_path: Path) -> None:
    start = ("publish", changed(tmp_path), "-m", "m", "--canary", "tier=canary", "--bake", "1h")
    assert (await env.cb("publisher", *start))[0] == 0
    code, out, err = await env.cb("viewer", "watch", "--timeout", "0.5", "--interval", "0.1")
    assert code == 2 and "timeout after 0.5s: rollout ro-" in err, out + err
    assert "rollout ro-" in out and "0 of 20 requests seen" in out

    code, _, err = await env.cb("viewer", "rollout", "abort")
    assert code == 1 and "may not rollout_abort" in err
    code, out, err = await env.cb("sre", "rollout", "abort", "-m", "not today")
    assert code == 0 and "reason:   aborted by sam: not today" in out, out + err
    assert (await env.cb("viewer", "watch"))[0] == 1
    code, _, err = await env.cb("sre", "rollout", "promote")
    assert code == 1 and "already ended (aborted)" in err

    start = ("publish", changed(tmp_path, "ERROR"), "-m", "m", "--canary", "50%", "--bake", "1h")
    assert (await env.cb("publisher", *start))[0] == 0
    code, out, _ = await env.cb("publisher", "rollout", "promote", "--json")
    assert code == 0 and json.loads(out)["rollout"]["state"] == "promoted"
    code, out, err = await env.cb("viewer", "watch", "--interval", "0.1")
    assert code == 0 and "converged: 3 live replica(s) run version 3" in out, out + err


def _refuse_debug(doc: Document, prev: Any) -> Document:
    if doc.logging.level == "DEBUG":
        raise ValueError("logging.level DEBUG is not allowed on this replica")
    return doc


async def test_a_canary_rejecting_the_version_makes_watch_exit_1(
    env: Env, tmp_path: Path, stack: AsyncExitStack
) -> None:
    store = make_store(env.fleet.url, env.ns)
    stack.push_async_callback(store.redis.aclose)
    picky: Watcher[Document, Document] = Watcher(
        store,
        decode=decode_body,
        build=_refuse_debug,
        settings=settings(env.ns, env.fleet.url, replica_id="c2"),
        labels={"tier": "canary"},
    )
    await stack.enter_async_context(picky)
    await until(lambda: on(picky, 1), 5, "c2 on v1")
    code, out, err = await env.cb(
        "publisher", "publish", changed(tmp_path, "DEBUG"), "-m", "m",
        "--canary", "tier=canary", "--bake", "1h",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await env.cb("viewer", "watch", "--interval", "0.1")
    assert code == 1, out + err
    # The guard aborts at once on a NACK; watch may see the NACK or the abort first.
    assert "c2 rejected version 2: logging.level DEBUG is not allowed" in err, err
    code, out, _ = await env.cb("viewer", "rollout", "status")
    await until(lambda: on(picky, 1), 5, "c2 still on v1")


async def test_rollback_during_a_rollout_aborts_it_first(env: Env, tmp_path: Path) -> None:
    assert (await env.cb("publisher", "publish", changed(tmp_path, "ERROR"), "-m", "v2"))[0] == 0
    start = ("publish", changed(tmp_path), "-m", "m", "--canary", "tier=canary", "--bake", "1h")
    assert (await env.cb("publisher", *start))[0] == 0
    await until(lambda: on(env.fleet.watchers["c1"], 3), 5, "canary on v3")
    code, _, err = await env.cb("sre", "rollback", "1", "-m", "undo", "--if-match", "7")
    assert code == 1 and "current version is 2" in err
    assert (await env.cb("viewer", "rollout", "status"))[1].count("running") == 1

    code, out, err = await env.cb("sre", "rollback", "1", "-m", "undo")
    assert code == 0 and "version 4" in out, out + err
    code, out, _ = await env.cb("viewer", "rollout", "status")
    assert "ABORTED" in out and "reason:   aborted by sam: rollback to version 1: undo" in out
    code, out, _ = await env.cb("viewer", "audit", "--json")
    actions = [(e["action"], e["actor"]) for e in json.loads(out)["entries"]]
    assert actions.index(("rollback", "sam")) < actions.index(("rollout_abort", "sam"))
    code, out, err = await env.cb("viewer", "watch", "--interval", "0.1")
    assert code == 0 and "converged: 3 live replica(s) run version 4" in out, out + err


async def test_preflight_refuses_a_rollout_to_a_dead_provider(env: Env, tmp_path: Path) -> None:
    dead = write(
        tmp_path, "dead.json", sample_data(upstream_a=f"http://127.0.0.1:{free_port()}/v1")
    )
    code, out, err = await env.cb(
        "publisher", "publish", dead, "-m", "m", "--canary", "tier=canary", "--preflight"
    )
    assert code == 1 and "preflight_failed" in err and "providers[0]" in err, out + err
    code, _, err = await env.cb("viewer", "rollout", "status")
    assert code == 1 and "no rollout" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--canary", "0%"], "argument --canary: selector '0%': a share is above 0%"),
        (["--canary", "tier"], "argument --canary: selector 'tier': 'tier' is not key=value"),
        (["--canary", "tier=canary", "--bake", "x"], "argument --bake: 'x' is not a duration"),
        (["--canary", "5%", "--max-error-rate", "x"], "argument --max-error-rate: 'x' is not a"),
    ],
)
def test_bad_flags_are_refused_by_the_parser(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["publish", "doc.yaml", "-m", "x", *flags])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bake", "10s"], "--bake: only with --canary"),
        (["--preflight"], "--preflight: only with --canary"),
        (["--canary", "5%", "--max-error-rate", "120%"], "--max-error-rate 1.2: must be <= 1"),
        (["--canary", "5%", "--min-requests", "0"], "--min-requests 0: must be >= 1"),
        (["--canary", "5%", "--max-p99-ratio", "0.5"], "--max-p99-ratio 0.5: must be >= 1"),
        (["--canary", "5%", "--bake", "8d"], "is not a duration"),
        (["--canary", "5%", "--bake", "200h"], "--bake 720000s: must be <= 604800"),
    ],
)
def test_guard_and_bake_flags_are_checked_by_the_contract(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["publish", "doc.yaml", "-m", "x", "--admin-url", "http://127.0.0.1:9", "-n", "x"]
    try:
        code = main([*argv, "--token", "t", *flags])
    except SystemExit as exc:
        code = exc.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("2m", 120), ("1h", 3600), ("90", 90), ("1.5m", 90), ("500ms", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert duration_arg(text) == seconds


def test_rates() -> None:
    assert rate_arg("5%") == pytest.approx(0.05) and rate_arg("0.1") == 0.1
