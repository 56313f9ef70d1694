"""Real servers for tests: a redis-server we own, uvicorn processes, bounded polling."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import httpx
import redis

from configbus.tooling.localredis import LocalRedis, ping
from configbus.tooling.localredis import free_port as free_port  # re-exported for the tests

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent


def wait_for(
    condition: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll until `condition()` returns something truthy; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:  # the condition may fail until the thing is up
            last_exc = exc
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"timed out after {timeout}s waiting for {what or condition}"
                + (f" (last error: {last_exc!r})" if last_exc else "")
            )
        time.sleep(interval)


class RedisServer(LocalRedis):
    """A redis-server this test session owns, with the faults tests inject."""

    def __init__(self, *, port: int | None = None, appendonly: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found on PATH (make test installs it)")
        super().__init__(port=port, appendonly=appendonly)

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        super().start(timeout_s)
        return self

    def ping(self) -> bool:
        return ping(self.url)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def stop(self, *, hard: bool = False) -> None:
        """Stop our process (SIGKILL when `hard`), resuming it first if paused."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
        super().stop(hard=hard)

    def restart(self, *, empty: bool = True) -> None:
        self.stop(hard=True)
        if empty:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir.mkdir(parents=True)
        self.start()

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


class Service:
    """A child process (uvicorn app, CLI) that we started and stop by PID."""

    def __init__(
        self, args: Sequence[str], *, env: dict[str, str] | None = None, name: str = ""
    ) -> None:
        self.args = list(args)
        self.env = {**os.environ, **(env or {})}
        self.name = name or self.args[0]
        self.log = Path(tempfile.mkstemp(prefix="cb-svc-", suffix=".log")[1])
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT
            )
        return self

    def wait_http(self, url: str, *, status: int = 200, timeout: float = 20.0) -> None:
        def ok() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n" + self.output()
                )
            return httpx.get(url, timeout=1.0).status_code == status

        wait_for(ok, timeout=timeout, what=f"{self.name} at {url}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        code = self.proc.returncode
        self.proc = None
        return code


def configbus_cmd(*args: str) -> list[str]:
    """The `configbus` CLI, run with this interpreter."""
    return [sys.executable, "-m", "configbus", *args]
