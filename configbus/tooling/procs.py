"""Child processes we own: start one, wait until it is ready, stop its whole tree by PID.

Every process the tooling, the tests and the benches run goes through here, so they all
share one policy:
- a child is the leader of its own session, so "its tree" is its process group and a
  terminal's Ctrl-C reaches only us (we stop children ourselves, in order);
- on Linux it gets SIGTERM if the thread that started it dies, even by SIGKILL, so nothing
  outlives its parent;
- stopping is SIGTERM to the group, a grace period, then SIGKILL to the group, by PID only;
- waiting is a bounded poll that fails at once, with the tail of the child's log, if the
  child exits first.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

DEFAULT_GRACE_S = 10.0
DEFAULT_READY_TIMEOUT_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ChildExited(RuntimeError):
    """A child exited while we waited for it to be ready; the message ends with its log."""


def _load_prctl() -> Callable[[int, int], int] | None:
    # Resolved here, in the parent: between fork and exec the child may only call what is
    # already loaded (dlopen there could deadlock on a lock another thread held).
    try:
        import ctypes

        fn: Callable[[int, int], int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


_PRCTL = _load_prctl() if os.uname().sysname == "Linux" else None
_PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int) -> Callable[[], None]:
    def arm() -> None:  # runs in the child, before exec
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before the line above: follow it
            os._exit(1)

    return arm


def child_options() -> dict[str, Any]:
    """Popen keyword arguments for a child we own: its own session, dies with its parent.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, so it is armed only
    from the main thread; a child started from a short-lived thread would be killed with it.
    """
    opts: dict[str, Any] = {"start_new_session": True}
    if _PRCTL is not None and threading.current_thread() is threading.main_thread():
        opts["preexec_fn"] = _die_with(os.getpid())
    return opts


def signal_tree(pid: int, sig: int) -> bool:
    """Send `sig` to the process group led by `pid`; False when none is left."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    return True


def http_ok(url: str, status: int = 200) -> Callable[[], bool]:
    """A readiness check: GET `url` answers `status`."""

    def check() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code == status
        except httpx.HTTPError:
            return False

    return check


def port_open(port: int, host: str = "127.0.0.1") -> Callable[[], bool]:
    """A readiness check: something accepts TCP connections on `host:port`."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


class Child:
    """One child process, its output in `log` (or discarded), stopped with its tree.

    A Child can be started again after it stopped (a restart); the log is truncated by the
    first start and appended to by the next ones, so one file tells the child's whole story.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str = "",
        env: Mapping[str, str] | None = None,
        log: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.name = name or Path(self.argv[0]).name
        self.env = dict(os.environ if env is None else env)
        self.log = log
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._starts = 0

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> Child:
        if self.running():
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        if self.log is None:
            self.proc = self._popen(subprocess.DEVNULL)
        else:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            with self.log.open("ab" if self._starts else "wb") as out:
                self.proc = self._popen(out)
        self._starts += 1
        return self

    def _popen(self, out: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            **child_options(),
        )

    def output(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        return self.output()[-chars:]

    def wait_ready(
        self,
        check: Callable[[], object],
        *,
        timeout: float = DEFAULT_READY_TIMEOUT_S,
        interval: float = 0.05,
        what: str = "ready",
    ) -> None:
        """Poll `check` until it is truthy; fail if the child exits or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise ChildExited(
                    f"{self.name} exited with code {code} before it was {what}; "
                    f"its log ({self.log}):\n{self.tail()}"
                )
            if check():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} was not {what} within {timeout}s; its log ({self.log}):\n"
                    + self.tail()
                )
            time.sleep(interval)

    def wait_http(self, url: str, *, status: int = 200, timeout: float = 30.0) -> None:
        self.wait_ready(http_ok(url, status), timeout=timeout, what=f"answering {url}")

    def wait_port(self, port: int, *, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
        self.wait_ready(port_open(port, host), timeout=timeout, what=f"listening on {port}")

    def send_signal(self, sig: int) -> None:
        """Send `sig` to the child itself (SIGSTOP / SIGCONT to pause a server)."""
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, *, grace: float = DEFAULT_GRACE_S) -> int | None:
        """Stop the child's tree: `sig`, then SIGKILL after `grace`. Returns its exit code."""
        return stop_all([self], sig, grace=grace).get(id(self))

    def kill(self) -> int | None:
        return self.stop(signal.SIGKILL, grace=0)

    def __enter__(self) -> Child:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """True once the leader has exited, leaving it a zombie (not reaped): while it is one,
    its PID and process group id cannot be given to anyone else, so the group is still ours."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped behind Popen's back
        return True


def stop_all(
    children: Iterable[Child], sig: int = signal.SIGTERM, *, grace: float = DEFAULT_GRACE_S
) -> dict[int, int | None]:
    """Stop several children at once, sharing one grace period; exit codes by id(child)."""
    live = [c for c in children if c.proc is not None]
    for c in live:
        assert c.proc is not None
        if not _exited(c.proc):
            signal_tree(c.proc.pid, sig)
            if sig not in (signal.SIGKILL, signal.SIGCONT):
                # A paused (SIGSTOP) child cannot act on SIGTERM until it runs again.
                signal_tree(c.proc.pid, signal.SIGCONT)
    deadline = time.monotonic() + grace
    codes: dict[int, int | None] = {}
    for c in live:
        proc = c.proc
        assert proc is not None
        while not _exited(proc) and time.monotonic() < deadline:
            time.sleep(0.01)
        if proc.returncode is None:
            # Leader gone or past its grace: SIGKILL whatever is left of its group (a worker,
            # a shell's child) before reaping the leader, while the group id is still ours.
            signal_tree(proc.pid, signal.SIGKILL)
        proc.wait()
        codes[id(c)] = proc.returncode
        c.proc = None
    return codes
