"""The local fleet of `configbus up`: Redis, the admin, N proxy replicas, two mock upstreams.

Redis comes from the first of: the server at CONFIGBUS_REDIS_URL when it answers; a
`redis-server` from PATH on a free port; an embedded fakeredis server (with Lua) in this
process, so the fleet still runs where no Redis exists. Every child is started here and
stopped here through `configbus.tooling.procs`: by PID, with its process group, SIGTERM then
SIGKILL for any that outlive the grace period, and never outliving `configbus up` itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec

from configbus.codec import canonical, parse
from configbus.connection import connect
from configbus.crypto import SecretBox, encrypt_secrets, generate_key
from configbus.names import DEFAULT_NAMESPACE
from configbus.store import Store
from configbus.tooling.embedded import start_embedded_redis
from configbus.tooling.localredis import LocalRedis, ping
from configbus.tooling.procs import Child, free_port, stop_all
from configbus.validation import to_document

EXAMPLES = Path(__file__).resolve().parent / "examples"  # package data: works from a wheel
DEFAULT_PORT_BASE = 7400
DEMO_KEY_SHA256 = hashlib.sha256(b"sk-configbus-demo").hexdigest()
CANARY_LABELS = "tier=canary"  # replica-1's labels


@dataclass
class Member:
    """One service of the fleet: its process and the URL it serves."""

    url: str
    child: Child

    @property
    def name(self) -> str:
        return self.child.name

    @property
    def log(self) -> Path:
        assert self.child.log is not None
        return self.child.log


@dataclass
class Fleet:
    """What `configbus up` started; `stop()` ends all of it."""

    run_dir: Path
    namespace: str
    redis_url: str
    redis_kind: str
    admin_token: str
    client_key: str
    children: list[Member] = field(default_factory=list)
    local_redis: LocalRedis | None = None
    embedded: Any = None
    login_url: str = ""  # the console, logged in by a one-time code (valid once, a minute)

    def child(self, name: str) -> Member:
        return next(c for c in self.children if c.name == name)

    def describe(self) -> dict[str, Any]:
        return {
            "redis": {"url": self.redis_url, "kind": self.redis_kind},
            "namespace": self.namespace,
            "admin_token": self.admin_token,
            "client_key": self.client_key,
            "processes": [
                {"name": c.name, "url": c.url, "pid": c.child.pid, "log": str(c.log)}
                for c in self.children
            ],
            "pids": [c.child.pid for c in self.children]
            + ([self.local_redis.pid] if self.local_redis and self.local_redis.pid else []),
        }

    def stop(self, grace_s: float = 10.0) -> None:
        stop_all([c.child for c in self.children], grace=grace_s)
        self.children.clear()
        if self.local_redis is not None:
            self.local_redis.cleanup()
            self.local_redis = None
        if self.embedded is not None:
            self.embedded.shutdown()
            self.embedded.server_close()
            self.embedded = None


def _ports(base: int, count: int) -> list[int]:
    if base == 0:
        return [free_port() for _ in range(count)]
    return list(range(base, base + count))


def _redis(fleet_env: dict[str, str]) -> tuple[str, str, LocalRedis | None, Any]:
    url = fleet_env.get("CONFIGBUS_REDIS_URL")
    if url and ping(url, 1.0):
        return url, f"existing Redis at {url}", None, None
    if shutil.which("redis-server"):
        local = LocalRedis().start()
        return local.url, f"redis-server on port {local.port}, started by configbus up", local, None
    port = free_port()
    server = start_embedded_redis(port)
    url = f"redis://127.0.0.1:{port}/0"
    return url, f"embedded fakeredis on port {port} (no redis-server found)", None, server


def render(name: str, mock_a: str, mock_b: str, client_key: str) -> str:
    """An example document with the fleet's real upstream URLs and client key hash."""
    text = (EXAMPLES / name).read_text()
    key_hash = hashlib.sha256(client_key.encode()).hexdigest()
    return (
        text.replace("http://127.0.0.1:7401/v1", f"{mock_a}/v1")
        .replace("http://127.0.0.1:7402/v1", f"{mock_b}/v1")
        .replace(DEMO_KEY_SHA256, key_hash)
    )


async def _seed(url: str, namespace: str, box: SecretBox, text: str) -> int:
    store = Store(connect(url), namespace)
    try:
        head = await store.head()
        if head.version:
            return -head.version  # keep what an existing store holds
        doc = encrypt_secrets(to_document(parse(text, "yaml", source="examples/fleet.yaml")), box)
        result = await store.publish(
            canonical(doc), expected_version=0, author="configbus up", message="seed: example fleet"
        )
        return result.version
    finally:
        await store.redis.aclose()


def login_link(admin_url: str, token: str) -> str:
    """A one-time console login link for `token` (the admin mints the code; "" if it
    cannot): the code is valid once and for a minute, and is not the token."""
    try:
        r = httpx.post(
            f"{admin_url}/ui/api/login-codes",
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        r.raise_for_status()
        return admin_url + str(r.json()["path"])
    except (httpx.HTTPError, KeyError, ValueError):
        return ""


def start_fleet(
    *,
    replicas: int = 3,
    port_base: int = DEFAULT_PORT_BASE,
    run_dir: Path | None = None,
    tokens: Sequence[str] = (),
) -> Fleet:
    """Start everything and return once every replica serves the seeded config. `tokens`:
    more admin tokens (`name:role:token`) beside the fleet's own admin token."""
    env = dict(os.environ)
    run_dir = (run_dir or Path.cwd() / ".configbus").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    namespace = env.get("CONFIGBUS_NAMESPACE", DEFAULT_NAMESPACE)
    redis_url, redis_kind, local, embedded = _redis(env)
    secret_keys = env.get("CONFIGBUS_SECRET_KEYS") or generate_key()
    fleet = Fleet(
        run_dir=run_dir,
        namespace=namespace,
        redis_url=redis_url,
        redis_kind=redis_kind,
        admin_token="cb-admin-" + secrets.token_urlsafe(18),
        client_key="sk-cb-" + secrets.token_urlsafe(18),
        local_redis=local,
        embedded=embedded,
    )
    try:
        admin_port, a_port, b_port, *proxy_ports = _ports(port_base, 3 + replicas)
        common = {
            **env,
            "CONFIGBUS_REDIS_URL": redis_url,
            "CONFIGBUS_NAMESPACE": namespace,
            "CONFIGBUS_SECRET_KEYS": secret_keys,
            "CONFIGBUS_RECONCILE_INTERVAL_S": env.get("CONFIGBUS_RECONCILE_INTERVAL_S", "2"),
            "MOCK_B_API_KEY": "sk-mock-b-demo",
        }
        me = [sys.executable, "-m", "configbus"]

        def spawn(name: str, port: int, args: list[str], extra: dict[str, str]) -> Member:
            argv = [*me, *args, "--host", "127.0.0.1", "--port", str(port)]
            child = Child(argv, name=name, env={**common, **extra}, log=run_dir / f"{name}.log")
            member = Member(f"http://127.0.0.1:{port}", child)
            fleet.children.append(member)
            child.start()
            return member

        mock_a = spawn("mock-a", a_port, ["mock-upstream", "--name", "mock-a"], {})
        mock_b = spawn("mock-b", b_port, ["mock-upstream", "--name", "mock-b"], {})
        for name in ("fleet.yaml", "fleet-v2.yaml", "broken.yaml", "broken-provider.yaml"):
            text = render(name, mock_a.url, mock_b.url, fleet.client_key)
            (run_dir / name).write_text(text)
        asyncio.run(
            _seed(
                redis_url,
                namespace,
                SecretBox.from_string(secret_keys),
                (run_dir / "fleet.yaml").read_text(),
            )
        )
        admin = spawn(
            "admin",
            admin_port,
            ["admin"],
            {"CONFIGBUS_ADMIN_TOKENS": ",".join([f"admin:admin:{fleet.admin_token}", *tokens])},
        )
        proxies = [
            spawn(
                f"replica-{i + 1}",
                port,
                ["proxy"],
                {
                    "CONFIGBUS_REPLICA_ID": f"replica-{i + 1}",
                    "CONFIGBUS_SNAPSHOT_PATH": str(run_dir / f"replica-{i + 1}.lkg.json"),
                    # The tour's canary: a rollout's `tier=canary` stage runs here first.
                    "CONFIGBUS_REPLICA_LABELS": CANARY_LABELS if i == 0 else "",
                },
            )
            for i, port in enumerate(proxy_ports)
        ]
        for m in (mock_a, mock_b):
            m.child.wait_http(m.url + "/_stats")
        admin.child.wait_http(admin.url + "/health/ready")
        for m in proxies:
            m.child.wait_http(m.url + "/health/ready")
        fleet.login_url = login_link(admin.url, fleet.admin_token)
        (run_dir / "up.json").write_bytes(
            msgspec.json.format(msgspec.json.encode(fleet.describe()))
        )
    except BaseException:
        fleet.stop()
        raise
    return fleet
