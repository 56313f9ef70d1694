"""A Redis primary, its replica and a Sentinel watching them: processes the test owns.

Timings are short so a failover fits a test: the sentinel calls the primary down after
`DOWN_AFTER_MS` of silence and, alone (quorum 1), promotes the replica.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path

import redis

from configbus.tooling.localredis import LocalRedis, ping
from configbus.tooling.procs import Child, free_port

SERVICE = "cb"
DOWN_AFTER_MS = 400
# Every server may become a primary: full syncs must start at once, not after 5 s.
SYNC_ARGS = ("--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1")


class SentinelSet:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="configbus-sentinel-"))
        self.a = LocalRedis(dir=self.dir / "a", extra_args=SYNC_ARGS)
        self.b = LocalRedis(
            dir=self.dir / "b",
            extra_args=(*SYNC_ARGS, "--replicaof", "127.0.0.1", str(self.a.port)),
        )
        self.sentinel_port = free_port()
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
            f"dir {self.dir}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.a.port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        binary = shutil.which("redis-sentinel")
        argv = [binary, str(conf)] if binary else ["redis-server", str(conf), "--sentinel"]
        self.sentinel = Child(argv, name="redis-sentinel", log=self.dir / "sentinel.log")

    def url(self, *, userinfo: str = "") -> str:
        # A dead sentinel first: the client moves on to the next one in the list.
        return (
            f"redis+sentinel://{userinfo}127.0.0.1:{free_port()},"
            f"127.0.0.1:{self.sentinel_port}/{SERVICE}/0"
        )

    def start(self) -> SentinelSet:
        self.a.start()
        self.b.start()
        self.sentinel.start()
        self.sentinel.wait_ready(
            lambda: self.primary_port() == self.a.port and self._replicas_known() == 1,
            timeout=15,
            interval=0.05,
            what="sentinel sees the primary and its replica",
        )
        self.wait_synced(self.b)
        return self

    def _client(self) -> redis.Redis:
        return redis.Redis(port=self.sentinel_port, socket_timeout=0.5)

    def primary_port(self) -> int | None:
        with self._client() as c:
            try:
                addr = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            except (redis.RedisError, OSError):
                return None
        return int(addr[1]) if addr else None

    def _replicas_known(self) -> int:
        with self._client() as c:
            try:
                return len(c.execute_command("SENTINEL", "REPLICAS", SERVICE))
            except (redis.RedisError, OSError):
                return 0

    def server(self, port: int) -> LocalRedis:
        return self.a if port == self.a.port else self.b

    def wait_synced(self, replica: LocalRedis, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        with redis.Redis(port=replica.port, socket_timeout=0.5) as c:
            while c.info("replication").get("master_link_status") != "up":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica {replica.port} not in sync")
                time.sleep(0.02)

    def failover(self) -> None:
        """A graceful failover (the sentinel demotes the primary and promotes the replica)."""
        with self._client() as c:
            c.execute_command("SENTINEL", "FAILOVER", SERVICE)

    def wait_new_primary(self, old: int, timeout_s: float = 15.0) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            port = self.primary_port()
            if port not in (None, old) and ping(f"redis://127.0.0.1:{port}/0", 0.3):
                with redis.Redis(port=port, socket_timeout=0.5) as c:
                    if c.info("replication").get("role") == "master":
                        return port
            if time.monotonic() > deadline:
                raise TimeoutError(f"no new primary within {timeout_s}s")
            time.sleep(0.02)

    def cleanup(self) -> None:
        self.sentinel.stop(signal.SIGKILL)
        self.a.stop(hard=True)
        self.b.stop(hard=True)
        shutil.rmtree(self.dir, ignore_errors=True)
