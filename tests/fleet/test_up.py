"""`configbus up` end to end: the README's tour, run exactly as `up` prints it."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, wait_for

pytestmark = pytest.mark.slow


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes once reaped or defunct.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


@pytest.fixture
def fleet(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIGBUS_")}
    env["CONFIGBUS_RECONCILE_INTERVAL_S"] = "0.5"
    if getattr(request, "param", None) == "no-redis-server":
        env["PATH"] = str(Path(sys.executable).parent)  # hides redis-server (and bash tools)
    proc = subprocess.Popen(
        [sys.executable, "-m", "configbus", "up", "--port-base", "0", "--run-dir", str(run_dir)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops the fleet" in line:
            break
    out = "".join(lines)
    try:
        assert "Ctrl-C stops the fleet" in out, out
        yield proc, out, run_dir
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        proc.stdout.close()


def run(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", line], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_tour_as_printed_then_ctrl_c_leaves_no_process(
    fleet: tuple[subprocess.Popen[str], str, Path],
) -> None:
    proc, out, run_dir = fleet
    commands = [m[1] for m in re.finditer(r"^  \$ (.+)$", out, re.M)]
    export, chat, publish, watch, broken, rollback, status, *canary_step = commands
    canary, load, follow, rollout_status = canary_step
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIGBUS_")}
    for assignment in export.removeprefix("export ").split():
        key, value = assignment.split("=", 1)
        env[key] = value

    def ask() -> str:
        if shutil.which("curl"):
            r = run(chat, env)
            assert r.returncode == 0, r.stderr
            return str(json.loads(r.stdout)["choices"][0]["message"]["content"])
        pytest.skip("curl is not installed")

    assert ask() == "served by mock-a"

    r = run(publish, env)
    assert r.returncode == 0 and "version 2" in r.stdout, r.stdout + r.stderr
    r = run(watch, env)
    assert r.returncode == 0 and "converged: 3 live replica(s) run version 2" in r.stdout, r.stdout
    assert ask() == "served by mock-b"

    r = run(broken, env)
    assert r.returncode == 1
    assert "models[0].fallbacks[0]: unknown model 'chat-backpu'" in r.stdout + r.stderr

    r = run(rollback, env)
    assert r.returncode == 0 and "version 3" in r.stdout, r.stdout + r.stderr
    wait_for(
        lambda: "all live replicas on head" in run(status, env).stdout,
        timeout=10,
        what="replicas on version 3",
    )
    assert "3 (head)  3" in run(status, env).stdout
    assert ask() == "served by mock-a"

    # 5. a valid but broken document, canary first: the guard aborts it by itself.
    r = run(canary, env)
    assert r.returncode == 0 and "rollout ro-" in r.stdout and "version 4" in r.stdout, r.stderr
    assert "stage 1: tier=canary, bake 10s" in r.stdout
    r = run(load, env)
    assert r.returncode == 0 and r.stdout.split().count("200") < 10, r.stdout
    r = run(follow, env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert re.search(r"aborted at stage 1 of 1: stage 1 error rate 100% .* over \d+", r.stderr)
    r = run(rollout_status, env)
    assert r.returncode == 0 and "state:    ABORTED" in r.stdout, r.stdout + r.stderr
    assert re.search(r"reason:   stage 1 error rate 100% .* over \d+ requests", r.stdout)
    per_version = json.loads(run(status + " --json", env).stdout)["summary"]["per_version"]
    assert per_version == {"3": 3}  # the canary is back on head; the others never left it
    assert ask() == "served by mock-a"

    pids = json.loads((run_dir / "up.json").read_text())["pids"]
    assert len(pids) == 7  # 2 mocks, admin, 3 replicas, redis-server
    assert all(pid_alive(p) for p in pids)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=10, what="children gone")


@pytest.mark.parametrize("fleet", ["no-redis-server"], indirect=True)
def test_up_without_redis_server_uses_the_embedded_fallback(
    fleet: tuple[subprocess.Popen[str], str, Path],
) -> None:
    _, out, _ = fleet
    assert "embedded fakeredis" in out
    commands = [m[1] for m in re.finditer(r"^  \$ (.+)$", out, re.M)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for assignment in commands[0].removeprefix("export ").split():
        key, value = assignment.split("=", 1)
        env[key] = value
    r = run(commands[2], env)  # publish
    assert r.returncode == 0 and "version 2" in r.stdout, r.stdout + r.stderr
    r = run(commands[3], env)  # watch
    assert r.returncode == 0 and "run version 2" in r.stdout, r.stdout + r.stderr
    r = run(commands[5], env)  # rollback
    assert r.returncode == 0 and "version 3" in r.stdout, r.stdout + r.stderr
