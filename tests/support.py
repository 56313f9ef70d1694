"""Real servers for tests: a redis-server we own, child processes, bounded polling.

Thin wrappers over `configbus.tooling.procs` (the one process harness), kept so tests read
the same as before.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

import redis

from configbus.tooling.localredis import LocalRedis, ping
from configbus.tooling.procs import Child
from configbus.tooling.procs import free_port as free_port  # re-exported for the tests

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


class Service:
    """A child process (uvicorn app, CLI) that we started and stop by PID."""

    def __init__(
        self, args: Sequence[str], *, env: dict[str, str] | None = None, name: str = ""
    ) -> None:
        log = Path(tempfile.mkstemp(prefix="cb-svc-", suffix=".log")[1])
        self.child = Child(args, name=name, env={**os.environ, **(env or {})}, log=log, cwd=ROOT)
        self.name = self.child.name
        self.log = log

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return self.child.proc

    def start(self) -> Service:
        self.child.start()
        return self

    def wait_http(self, url: str, *, status: int = 200, timeout: float = 20.0) -> None:
        self.child.wait_http(url, status=status, timeout=timeout)

    def output(self) -> str:
        return self.child.output()

    def stop(self, *, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        return self.child.stop(sig, grace=timeout)


def configbus_cmd(*args: str) -> list[str]:
    """The `configbus` CLI, run with this interpreter."""
    return [sys.executable, "-m", "configbus", *args]


async def eventually(
    condition: Callable[[], Awaitable[object] | object],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - the same call shape as wait_for
    interval: float = 0.01,
    what: str = "",
) -> None:
    """`wait_for` for async tests: poll `condition()` (awaited when it is a coroutine)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or condition}")
        await asyncio.sleep(interval)
