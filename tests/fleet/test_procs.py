"""The process harness: a child's whole tree stops, a failed start shows the child's log, and
nothing outlives the process that started it."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from configbus.tooling.procs import Child, ChildExited, free_port, stop_all
from tests.support import wait_for

pytestmark = pytest.mark.slow

# A process that ignores SIGTERM: only SIGKILL ends it.
STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")  # a zombie is as good as gone
    return stat.exists() and stat.read_text().split(") ")[1][0] != "Z"


def read_pid(path: Path) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text().strip(), what=str(path)))


def test_stop_ends_the_whole_tree_even_what_ignores_sigterm(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f"""
        import subprocess, sys, time
        p = subprocess.Popen([sys.executable, "-c", {STUBBORN!r}])
        open({str(pidfile)!r}, "w").write(str(p.pid))
        time.sleep(300)
    """
    child = Child([sys.executable, "-c", textwrap.dedent(script)], log=tmp_path / "c.log").start()
    grandchild = read_pid(pidfile)
    assert alive(grandchild)
    code = child.stop(grace=0.5)
    assert code == -signal.SIGTERM  # the leader obeyed; the grandchild needed SIGKILL
    wait_for(lambda: not alive(grandchild), timeout=5, what="grandchild gone")
    assert child.proc is None and child.stop() is None  # stopping twice is harmless


def test_waiting_on_a_child_that_exits_fails_at_once_with_its_log(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "print('port already taken'); raise SystemExit(3)"]
    child = Child(argv, name="broken", log=tmp_path / "broken.log").start()
    with pytest.raises(ChildExited, match=r"(?s)broken exited with code 3.*port already taken"):
        child.wait_ready(lambda: False, timeout=30)


def test_wait_for_a_port_then_restart_appends_to_the_log(tmp_path: Path) -> None:
    port = free_port()
    server = f"import http.server as h; print('up', flush=True); h.HTTPServer(('127.0.0.1', {port}), h.SimpleHTTPRequestHandler).serve_forever()"  # fmt: skip
    log = tmp_path / "s.log"
    child = Child([sys.executable, "-c", server], log=log, cwd=tmp_path)
    try:
        child.start().wait_port(port, timeout=10)
        child.wait_http(f"http://127.0.0.1:{port}/", timeout=10)
        stop_all([child], grace=5)
        child.start().wait_port(port, timeout=10)
        wait_for(lambda: log.read_text().count("up") == 2, what="second start logged")
    finally:
        child.stop()


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_does_not_outlive_the_process_that_started_it(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    script = f"""
        import sys, time
        from configbus.tooling.procs import Child
        c = Child([sys.executable, "-c", "import time; time.sleep(300)"]).start()
        open({str(pidfile)!r}, "w").write(str(c.pid))
        time.sleep(300)
    """
    parent = Child([sys.executable, "-c", textwrap.dedent(script)], log=tmp_path / "p.log")
    parent.start()
    try:
        grandchild = read_pid(pidfile)
        assert alive(grandchild)
        # SIGKILL the parent alone: it gets no chance to clean up. The grandchild is in its
        # own session (the parent's group does not hold it); PR_SET_PDEATHSIG ends it.
        parent.send_signal(signal.SIGKILL)
        wait_for(lambda: not alive(grandchild), timeout=5, what="grandchild gone with parent")
    finally:
        parent.stop()
