"""A redis-server child on a loopback port, for `configbus up`, the tests and the benches.

It is a `procs.Child` with Redis's arguments, a ping as its readiness check and the faults
the tests and the chaos soak inject (pause, restart with or without its data).
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Sequence
from pathlib import Path

import redis

from configbus.tooling.procs import Child, free_port


def ping(url: str, timeout_s: float = 0.5) -> bool:
    """True when a Redis answers at `url`."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


class LocalRedis:
    """`redis-server` from PATH, its data in `dir/data` and its log in `dir/redis.log`.

    `dir` is a new temp directory unless given; `cleanup()` removes it. With `appendonly`
    every write is fsynced to the AOF, so a restart "with data" keeps the lineage.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        appendonly: bool = False,
        dir: Path | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.port = port or free_port()
        self.dir = dir or Path(tempfile.mkdtemp(prefix="configbus-redis-"))
        self.data = self.dir / "data"
        self.data.mkdir(parents=True, exist_ok=True)
        self.paused = False
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if appendonly else ["--appendonly", "no"]  # fmt: skip
        argv = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "no",
            "--save", "", *aof, "--dir", str(self.data), "--daemonize", "no",
            "--loglevel", "warning", *extra_args,
        ]  # fmt: skip
        self.child = Child(argv, name=f"redis-server:{self.port}", log=self.dir / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self.child.pid

    def running(self) -> bool:
        return self.child.running()

    def spawn(self) -> LocalRedis:
        """Start the process without waiting for it (see `wait_ready`)."""
        self.child.start()
        self.paused = False
        return self

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        try:
            self.child.wait_ready(
                lambda: ping(self.url, 0.3), timeout=timeout_s, interval=0.01, what="answering"
            )
        except TimeoutError:
            self.stop(hard=True)
            raise

    def start(self, timeout_s: float = 10.0) -> LocalRedis:
        self.spawn().wait_ready(timeout_s)
        return self

    def stop(self, *, hard: bool = False) -> None:
        """Stop the process (SIGKILL when `hard`); its data stays for a restart."""
        self.child.stop(signal.SIGKILL if hard else signal.SIGTERM)
        self.paused = False

    def wipe(self) -> None:
        """Remove the data (while stopped): the next start is an empty Redis."""
        shutil.rmtree(self.data, ignore_errors=True)
        self.data.mkdir(parents=True)

    def restart(self, *, empty: bool = True) -> None:
        self.stop(hard=True)
        if empty:
            self.wipe()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open and nothing answers, like a stalled server."""
        self.child.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.child.send_signal(signal.SIGCONT)
        self.paused = False

    def cleanup(self) -> None:
        """Stop, and remove the directory."""
        self.stop(hard=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
