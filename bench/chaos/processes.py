"""The fleet the soak runs: Redis (AOF), two mock upstreams, two admins, three replicas (the
first labelled `tier=canary`).

Every replica reaches Redis and the read replica through a `ThreadedFaultProxy` (healthy
until a network fault sets it; the admins connect directly). As root, `IN_NETNS` runs in a
network namespace: its way to Redis is the namespace's `redis` link to a proxy listening on
the link's host address, its clients and upstreams use the `service` link (the mocks listen
on that link's host address, which the host's own processes reach as well).

Every process is a `configbus.tooling.procs.Child`: its own process group, stopped by PID,
and it dies with the soak even if the soak is SIGKILLed. Children are started from the event
loop's thread (the main one, which outlives them); waits and stops run in worker threads so
the load and the pollers keep going meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis

from bench.chaos.read_replica import ReadReplica
from configbus.crypto import generate_key
from configbus.tooling.faultproxy import NetFaults, ThreadedFaultProxy
from configbus.tooling.localredis import LocalRedis
from configbus.tooling.netns import NetNamespace, unavailable
from configbus.tooling.procs import Child, free_port, stop_all

NAMESPACE = "chaos"
KEYS = f"cb:{{{NAMESPACE}}}:"  # the prefix of every key of the namespace
ADMIN_TOKEN = "chaos-admin-token-" + secrets.token_hex(8)
RECONCILE_S = 0.5
HEARTBEAT_S = 0.5
STOP_GRACE_S = 15.0
CANARY = "replica-1"  # labelled tier=canary: the first stage of the soak's rollouts
CANARY_LABELS = "tier=canary"
IN_NETNS = "replica-3"  # runs in a network namespace (when root), cut from Redis by a fault


class Service:
    """A `python -m configbus ...` child on a free port, logging to `<run_dir>/<name>.log`."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        run_dir: Path,
        *,
        host: str = "127.0.0.1",
        netns: NetNamespace | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        argv = [sys.executable, "-m", "configbus", *args, "--host", host, "--port", str(self.port)]
        if netns is not None:
            argv = netns.exec_argv(argv)
        self.child = Child(argv, name=name, env=env, log=run_dir / f"{name}.log")

    def start(self) -> None:
        self.child.start()

    async def wait_http(self, path: str, timeout_s: float = 30.0) -> None:
        await asyncio.to_thread(self.child.wait_http, self.url + path, timeout=timeout_s)

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = STOP_GRACE_S) -> int | None:
        return await asyncio.to_thread(self.child.stop, sig, grace=timeout_s)


@dataclass
class Replica:
    service: Service
    rid: str
    down: bool = False  # deliberately stopped: no load, no polling
    in_flight: int = 0
    http: httpx.AsyncClient | None = None
    last: tuple[str, int] | None = None  # (epoch, version) last seen in /status
    left_epochs: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.service.url


class Fleet:
    def __init__(self, run_dir: Path, concurrency: int, *, netns: bool = True) -> None:
        try:
            self.redis = LocalRedis(dir=run_dir / "redis", appendonly=True)
        except FileNotFoundError:
            raise SystemExit(
                "redis-server is not on PATH (make redis-server installs it)"
            ) from None
        self.run_dir = run_dir
        self.read_replica = ReadReplica(run_dir, self.redis)
        self.concurrency = concurrency
        self.secret_key = generate_key()
        self.r = aioredis.Redis(
            port=self.redis.port, socket_timeout=1.0, socket_connect_timeout=0.5
        )
        # Every replica reaches Redis (and the read replica) through a fault proxy, healthy
        # until a network fault sets it; `IN_NETNS` through its namespace's link first.
        self.netns_skipped = unavailable() if netns else "not asked for (--no-netns)"
        self.netns = NetNamespace.create("configbus-chaos") if self.netns_skipped is None else None
        self.proxies = {
            "primary": ThreadedFaultProxy("127.0.0.1", self.redis.port, listen_port=free_port()),
            "read": ThreadedFaultProxy(
                "127.0.0.1", self.read_replica.redis.port, listen_port=free_port()
            ),
        }
        if self.netns is not None:
            self.proxies["netns"] = ThreadedFaultProxy(
                "127.0.0.1", self.redis.port, listen_host=self.netns.redis.host_ip,
                listen_port=free_port(),
            )  # fmt: skip
        # The upstreams listen where both the host and the namespace reach them.
        mock_host = self.netns.service.host_ip if self.netns else "127.0.0.1"
        self.mock_a = Service(
            "mock-a", ["mock-upstream", "--name", "a"], self.env(), run_dir, host=mock_host
        )
        self.mock_b = Service(
            "mock-b", ["mock-upstream", "--name", "b"], self.env(), run_dir, host=mock_host
        )
        admin_env = self.env(
            CONFIGBUS_ADMIN_TOKENS=f"chaos:admin:{ADMIN_TOKEN}",
            CONFIGBUS_ADMIN_PUBLISH_LIMIT="1000000",
            CONFIGBUS_ADMIN_BREAKER_RESET_S="0.5",
        )
        self.admins = [
            Service(f"admin-{i}", ["admin", "--log-level", "warning"], admin_env, run_dir)
            for i in (1, 2)
        ]
        self.replicas: list[Replica] = []
        for i in (1, 2, 3):
            rid = f"replica-{i}"
            in_netns = self.netns is not None and rid == IN_NETNS
            proxy = self.proxies["netns" if in_netns else "primary"]
            env = self.env(
                CONFIGBUS_REDIS_URL=proxy.url(),
                CONFIGBUS_REPLICA_ID=rid,
                CONFIGBUS_SNAPSHOT_PATH=str(run_dir / f"{rid}.lkg.json"),
                CONFIGBUS_RECONCILE_INTERVAL_S=str(RECONCILE_S),
                CONFIGBUS_HEARTBEAT_INTERVAL_S=str(HEARTBEAT_S),
                UPSTREAM_B_KEY="sk-upstream-b",
            )
            if self.read_replica.env(rid):
                env["CONFIGBUS_REDIS_READ_URL"] = self.proxies["read"].url()
            if rid == CANARY:
                env["CONFIGBUS_REPLICA_LABELS"] = CANARY_LABELS
            where: dict[str, Any] = {}
            if in_netns and self.netns is not None:
                where = {"host": self.netns.service.ns_ip, "netns": self.netns}
            self.replicas.append(Replica(Service(rid, ["proxy"], env, run_dir, **where), rid))
        self.admin_http: list[httpx.AsyncClient] = []
        self.wiped_at: list[float] = []  # monotonic: each time Redis came back empty
        self.dead_port = free_port()  # nothing listens there: the broken rollouts' provider

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIGBUS_")}
        env.update(
            CONFIGBUS_REDIS_URL=self.redis.url,
            CONFIGBUS_NAMESPACE=NAMESPACE,
            CONFIGBUS_SECRET_KEYS=self.secret_key,
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def set_net_faults(self, faults: NetFaults) -> None:
        """The same link faults on every replica's way to Redis."""
        for proxy in self.proxies.values():
            proxy.faults = faults

    def cut_connections(self) -> int:
        return sum(proxy.cut() for proxy in self.proxies.values())

    def net_stats(self) -> dict[str, dict[str, Any]]:
        return {name: proxy.stats() for name, proxy in self.proxies.items()}

    # -- Redis ---------------------------------------------------------------------------

    async def start_redis(self, *, wipe: bool = False) -> None:
        if wipe:
            self.wiped_at.append(time.monotonic())  # what was written before is gone
            self.redis.wipe()
        self.redis.spawn()
        await asyncio.to_thread(self.redis.wait_ready)

    async def kill_redis(self) -> None:
        await asyncio.to_thread(self.redis.stop, hard=True)

    def redis_down(self) -> bool:
        return self.redis.paused or not self.redis.running()

    async def head(self) -> tuple[str | None, int]:
        head, epoch = await self.r.mget([KEYS + "head", KEYS + "epoch"])
        return (epoch.decode() if epoch else None), int(head or 0)

    # -- services ------------------------------------------------------------------------

    async def start_services(self) -> None:
        """Redis, the mocks (answering in 5 ms) and the admins; replicas come later."""
        for proxy in self.proxies.values():
            proxy.start()
        await self.start_redis()
        await self.read_replica.start()
        for s in (self.mock_a, self.mock_b, *self.admins):
            s.start()
        for s in (self.mock_a, self.mock_b):
            await s.wait_http("/_stats")
        async with httpx.AsyncClient(timeout=2) as http:
            for s in (self.mock_a, self.mock_b):
                (await http.post(s.url + "/_control", json={"latency_ms": 5})).raise_for_status()
        for s in self.admins:
            await s.wait_http("/health/ready")
        self.admin_http = [
            httpx.AsyncClient(
                base_url=s.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=5.0
            )
            for s in self.admins
        ]

    async def start_replicas(self) -> None:
        for rep in self.replicas:
            rep.service.start()
        for rep in self.replicas:
            await rep.service.wait_http("/health/ready")
            rep.http = self.client()

    def client(self) -> httpx.AsyncClient:
        """A replica's client for the load loops."""
        return httpx.AsyncClient(
            timeout=10.0, limits=httpx.Limits(max_connections=self.concurrency + 4)
        )

    async def stop(self) -> None:
        """Stop everything (together, one grace period), then close our connections."""
        services = [r.service for r in self.replicas] + [*self.admins, self.mock_a, self.mock_b]
        await asyncio.to_thread(stop_all, [s.child for s in services], grace=STOP_GRACE_S)
        for rep in self.replicas:
            if rep.http is not None:
                await rep.http.aclose()
        for h in self.admin_http:
            await h.aclose()
        await self.r.aclose()
        await self.read_replica.stop()
        await self.kill_redis()  # its directory stays in the run dir with the logs
        for proxy in self.proxies.values():
            proxy.stop()
        if self.netns is not None:
            self.netns.destroy()
