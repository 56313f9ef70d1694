"""Chaos soak: a real fleet under client load while faults hit it and versions keep coming.

    python bench/chaos.py --minutes 10          # `make chaos`
    python bench/chaos.py --minutes 1 --json-out summary.json

It owns everything it runs (killed by PID, also on failure): a `redis-server` with AOF in a
temp dir (so "restart with data" keeps the lineage), two admin services, three proxy
replicas with last-known-good files and a short reconcile interval, and two mock upstreams
(`a` primary, `b` the fallback). While client load runs on every replica and a publisher
keeps publishing through the admins (If-Match + Idempotency-Key, re-reading head on 409),
a schedule of faults cycles:

    redis_kill_with_data    SIGKILL Redis, restart it on its AOF
    redis_restart_empty     SIGKILL Redis, restart it with no data: a new epoch
    redis_pause             SIGSTOP past every client timeout, then SIGCONT
    pubsub_kill             CLIENT KILL TYPE pubsub, then publish at once
    replica_restart         Redis down, SIGTERM a replica, restart it from its snapshot file
                            (must serve, marked stale), then Redis back
    invalid_document        a schema-invalid record written straight into Redis as head
    corrupt_record          a record whose body fails its checksum / that lacks fields
    two_admins              two admins publish on the same base: one 201, one 409
    clients_kill            CLIENT KILL TYPE normal: every plain connection dropped at once
    upstream_fail           the primary upstream answers 500: the fallback must answer

Invariants are checked all along (replicas' /status polled ~10x/s, every answer classified,
history read every second) and a JSON summary is printed; the exit code is 0 when every
check holds. Causes of failed requests are read from the answer: config (no config, 401,
403, 404, 400), redis/internal (500, client timeout, connection errors to a live replica),
upstream (502, 504, circuit open), rate limit (429).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from configbus.codec import canonical, sha256_hex  # noqa: E402
from configbus.crypto import generate_key  # noqa: E402
from configbus.testing import SAMPLE_CLIENT_KEY, sample_data  # noqa: E402

NAMESPACE = "chaos"
ADMIN_TOKEN = "chaos-admin-token-" + secrets.token_hex(8)
RECONCILE_S = 0.5
HEARTBEAT_S = 0.5
BACK_ON_HEAD_S = 2.0  # the promise: every replica on head within this of Redis returning
CONVERGE_TIMEOUT_S = 10.0
PAUSE_S = 3.0  # past the replicas' 2 s socket timeout and the admin's 1 s
DOWN_S = 1.5
FAULTS = (
    "redis_kill_with_data",
    "pubsub_kill",
    "invalid_document",
    "upstream_fail",
    "redis_pause",
    "two_admins",
    "corrupt_record",
    "replica_restart",
    "redis_restart_empty",
    "clients_kill",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def now() -> float:
    return time.monotonic()


# -- processes -------------------------------------------------------------------------


class RedisProc:
    """redis-server with AOF (fsync always) in a directory of ours, on a free port."""

    def __init__(self, run_dir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not on PATH (make redis-server installs it)")
        self.binary = binary
        self.port = free_port()
        self.dir = run_dir / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        args = [
            self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
            "--protected-mode", "no", "--save", "", "--appendonly", "yes",
            "--appendfsync", "always", "--dir", str(self.dir), "--daemonize", "no",
            "--loglevel", "warning", "--logfile", str(self.dir.parent / "redis.log"),
        ]  # fmt: skip
        self.proc = _spawn(args)
        deadline = now() + 10
        while not await self.ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            if now() > deadline:
                raise TimeoutError("redis-server did not answer in 10 s")
            await asyncio.sleep(0.01)

    async def ping(self) -> bool:
        r = aioredis.Redis(port=self.port, socket_timeout=0.3, socket_connect_timeout=0.3)
        try:
            return bool(await r.ping())
        except (aioredis.RedisError, OSError):
            return False
        finally:
            await r.aclose()

    async def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait, 10)
        self.proc, self.paused = None, False

    def wipe(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the soak itself dies (even by SIGKILL), so
    nothing it started outlives it. Linux only; elsewhere a no-op."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,  # children are spawned from the event loop thread only
    )


class Child:
    """A `python -m configbus ...` child, logging to a file, stopped by its PID."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], run_dir: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = run_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "configbus", *self.args, "--port", str(self.port)],
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    async def wait_http(self, path: str, timeout_s: float = 30.0) -> None:
        deadline = now() + timeout_s
        async with httpx.AsyncClient(timeout=1.0) as http:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    tail = self.log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(self.url + path)).status_code == 200:
                        return
                if now() > deadline:
                    raise TimeoutError(f"{self.name}: {path} not 200 in {timeout_s}s")
                await asyncio.sleep(0.05)

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                await asyncio.to_thread(proc.wait, timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 5)
        return proc.returncode


@dataclass
class Replica:
    child: Child
    rid: str
    down: bool = False  # deliberately stopped: no load, no polling
    in_flight: int = 0
    http: httpx.AsyncClient | None = None
    last: tuple[str, int] | None = None  # (epoch, version) last seen in /status
    left_epochs: set[str] = field(default_factory=set)


# -- the documents ---------------------------------------------------------------------


def document(n: int, mock_a: str, mock_b: str) -> dict[str, Any]:
    """Version n of the soak's document: valid, distinct from every other n."""
    data = sample_data(upstream_a=mock_a + "/v1", upstream_b=mock_b + "/v1")
    data["clients"][0]["rate_limit"] = {"rpm": 10_000_000}  # the soak measures config, not limits
    data["models"][0]["params"] = {"temperature": (n % 10) / 10}
    data["metadata"] = {"owner": "chaos", "change": str(n)}
    return data


def invalid_body(mock_a: str, mock_b: str) -> bytes:
    """A document that decodes as JSON but fails validation: a model on an unknown provider."""
    data = document(0, mock_a, mock_b)
    data["models"][0]["deployments"] = [{"provider": "no-such-provider", "model": "x"}]
    data["providers"][0]["api_key"] = {"secret": "plaintext-never-stored"}
    return msgspec.json.encode(data)


# -- the soak --------------------------------------------------------------------------


@dataclass
class Pending:
    key: str
    n: int
    body: dict[str, Any]
    if_match: int


class Soak:
    def __init__(self, minutes: float, run_dir: Path, seed: int, concurrency: int) -> None:
        self.duration_s = minutes * 60
        self.run_dir = run_dir
        self.rng = random.Random(seed)
        self.seed = seed
        self.concurrency = concurrency
        self.redis = RedisProc(run_dir)
        self.stopping = False
        self.lock = asyncio.Lock()  # held by one admin write (or one fault step) at a time
        self.t0 = now()
        self.n = 0
        self.run_id = secrets.token_hex(3)
        # observations
        self.requests: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self.failure_samples: list[dict[str, Any]] = []
        self.fallback_answers = 0
        self.created: dict[tuple[str, int], str] = {}  # (epoch, version) -> idempotency key
        self.created_at: dict[tuple[str, int], float] = {}
        self.doubled: list[dict[str, Any]] = []
        self.publish_outcomes: Counter[str] = Counter()
        self.injected: dict[tuple[str, int], str] = {}  # (epoch, version) -> kind
        self.wiped_epochs: set[str] = set()
        self.history: dict[tuple[str, int], str] = {}  # (epoch, version) -> message
        self.history_min: dict[str, int] = {}
        self.acks: dict[tuple[str, int], set[str]] = defaultdict(set)
        self.violations: list[dict[str, Any]] = []
        self.faults: list[dict[str, Any]] = []
        self.polls = 0
        self.base = 0  # the publisher's idea of head
        self.pending: Pending | None = None
        self.slowest_503_s = 0.0
        self.sre_view_s: float | None = None

    # -- setup -------------------------------------------------------------------------

    def _env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIGBUS_")}
        env.update(
            CONFIGBUS_REDIS_URL=self.redis.url,
            CONFIGBUS_NAMESPACE=NAMESPACE,
            CONFIGBUS_SECRET_KEYS=self.secret_key,
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    async def start(self) -> None:
        self.secret_key = generate_key()
        await self.redis.start()
        self.r = aioredis.Redis(
            port=self.redis.port, socket_timeout=1.0, socket_connect_timeout=0.5
        )
        self.mock_a = Child("mock-a", ["mock-upstream", "--name", "a"], self._env(), self.run_dir)
        self.mock_b = Child("mock-b", ["mock-upstream", "--name", "b"], self._env(), self.run_dir)
        admin_env = self._env(
            CONFIGBUS_ADMIN_TOKENS=f"chaos:admin:{ADMIN_TOKEN}",
            CONFIGBUS_ADMIN_PUBLISH_LIMIT="1000000",
            CONFIGBUS_ADMIN_BREAKER_RESET_S="0.5",
        )
        self.admins = [
            Child(f"admin-{i}", ["admin", "--log-level", "warning"], admin_env, self.run_dir)
            for i in (1, 2)
        ]
        self.replicas = []
        for i in (1, 2, 3):
            rid = f"replica-{i}"
            env = self._env(
                CONFIGBUS_REPLICA_ID=rid,
                CONFIGBUS_SNAPSHOT_PATH=str(self.run_dir / f"{rid}.lkg.json"),
                CONFIGBUS_RECONCILE_INTERVAL_S=str(RECONCILE_S),
                CONFIGBUS_HEARTBEAT_INTERVAL_S=str(HEARTBEAT_S),
                UPSTREAM_B_KEY="sk-upstream-b",
            )
            self.replicas.append(Replica(Child(rid, ["proxy"], env, self.run_dir), rid))
        for c in (self.mock_a, self.mock_b, *self.admins):
            c.start()
        for c in (self.mock_a, self.mock_b):
            await c.wait_http("/_stats")
        async with httpx.AsyncClient(timeout=2) as http:
            for c in (self.mock_a, self.mock_b):
                (await http.post(c.url + "/_control", json={"latency_ms": 5})).raise_for_status()
        for c in self.admins:
            await c.wait_http("/health/ready")
        self.admin_http = [
            httpx.AsyncClient(
                base_url=c.url,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=5.0,
            )
            for c in self.admins
        ]
        # The first version, then the replicas (which must come up on it).
        while self.n == 0 or self.pending is not None:
            await self.publish_step(admin=0)
        for rep in self.replicas:
            rep.child.start()
        for rep in self.replicas:
            await rep.child.wait_http("/health/ready")
            rep.http = self._client()

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=10.0, limits=httpx.Limits(max_connections=self.concurrency + 4)
        )

    async def stop(self) -> None:
        self.stopping = True
        for rep in getattr(self, "replicas", []):
            await rep.child.stop()
            if rep.http is not None:
                await rep.http.aclose()
        for c in getattr(self, "admins", []):
            await c.stop()
        for c in (getattr(self, "mock_a", None), getattr(self, "mock_b", None)):
            if c is not None:
                await c.stop()
        for h in getattr(self, "admin_http", []):
            await h.aclose()
        if hasattr(self, "r"):
            await self.r.aclose()
        await self.redis.kill()

    # -- publishing --------------------------------------------------------------------

    def _next(self) -> Pending:
        self.n += 1
        body = document(self.n, self.mock_a.url, self.mock_b.url)
        return Pending(f"chaos-{self.run_id}-{self.n}", self.n, body, self.base)

    async def _put(self, admin: int, p: Pending) -> httpx.Response:
        return await self.admin_http[admin].put(
            f"/v1/namespaces/{NAMESPACE}/config",
            json={"document": p.body, "message": p.key},
            headers={"If-Match": f'"{p.if_match}"', "Idempotency-Key": p.key},
        )

    def _record(self, p: Pending, resp: httpx.Response, by: str) -> tuple[str, int] | None:
        """Book one admin answer; returns (epoch, version) when the publish is settled."""
        try:
            body = resp.json()
        except ValueError:
            body = {}
        self.publish_outcomes[f"{resp.status_code} {body.get('outcome') or body.get('error', {}).get('code', '')}"] += 1  # fmt: skip
        if resp.status_code in (200, 201):
            ev = (body["epoch"], int(body["version"]))
            if body["outcome"] == "noop":
                self.violations.append({"what": "noop_publish", "key": p.key, "version": ev[1]})
            prev = self.created.get(ev)
            if prev is not None and prev != p.key:
                self.doubled.append({"version": ev[1], "keys": [prev, p.key]})
            if resp.status_code == 201 and prev == p.key:
                self.doubled.append({"version": ev[1], "keys": [p.key], "why": "two 201s"})
            self.created[ev] = p.key
            self.created_at.setdefault(ev, now())
            self.base = ev[1]
            return ev
        if resp.status_code == 409:
            current = body.get("error", {}).get("current_version")
            if isinstance(current, int):
                self.base = current
                p.if_match = current
        return None

    async def publish_step(self, admin: int = 0) -> tuple[str, int] | None:
        """One attempt of the pending publish (a new one when none is pending)."""
        if self.pending is None:
            self.pending = self._next()
        p = self.pending
        async with self.lock:
            started = now()
            try:
                resp = await self._put(admin, p)
            except httpx.HTTPError as exc:
                self.publish_outcomes[f"transport {type(exc).__name__}"] += 1
                return None
            if resp.status_code == 503:  # Redis down: the promise is a fast answer
                self.slowest_503_s = max(self.slowest_503_s, now() - started)
        settled = self._record(p, resp, f"admin-{admin + 1}")
        if settled is not None:
            self.pending = None
        elif resp.status_code not in (409, 429) and resp.status_code < 500:
            self.violations.append(
                {"what": "publish_refused", "key": p.key, "status": resp.status_code,
                 "body": resp.text[:300]}
            )  # fmt: skip
            self.pending = None
        return settled

    async def publish_now(self, admin: int = 0, timeout_s: float = 15.0) -> tuple[str, int]:
        """Publish one new version (retrying 409 / 503) and return it; the lock is taken per
        attempt, so call it without holding the lock."""
        deadline = now() + timeout_s
        self.pending = self.pending or self._next()
        while True:
            ev = await self.publish_step(admin)
            if ev is not None:
                return ev
            if now() > deadline:
                raise TimeoutError("publish did not go through")
            await asyncio.sleep(0.05)

    async def publisher(self) -> None:
        turn = 0
        while not self.stopping:
            await self.publish_step(admin=turn % 2)
            if self.pending is None:
                turn += 1
            await asyncio.sleep(self.rng.uniform(0.2, 0.6))

    # -- client load -------------------------------------------------------------------

    async def load(self, rep: Replica, worker: int) -> None:
        headers = {"authorization": f"Bearer {SAMPLE_CLIENT_KEY}"}
        n = 0
        while not self.stopping:
            if rep.down or rep.http is None:
                await asyncio.sleep(0.02)
                continue
            n += 1
            stream = n % 5 == 0
            body = {
                "model": "m",
                "messages": [{"role": "user", "content": f"hi {worker} {n}"}],
                "stream": stream,
            }
            rep.in_flight += 1
            self.requests["sent"] += 1
            try:
                resp = await rep.http.post(
                    rep.child.url + "/v1/chat/completions", json=body, headers=headers
                )
                self._classify(rep, resp, stream)
            except httpx.TimeoutException as exc:
                self._fail("redis_or_internal", rep, 0, f"client timeout {type(exc).__name__}")
            except httpx.HTTPError as exc:
                self._fail("transport", rep, 0, repr(exc))
            finally:
                rep.in_flight -= 1
            await asyncio.sleep(self.rng.uniform(0.01, 0.04))

    def _fail(self, cause: str, rep: Replica, status: int, detail: str) -> None:
        self.requests["failed"] += 1
        self.failed[cause] += 1
        if sum(1 for f in self.failure_samples if f["cause"] == cause) < 5:
            self.failure_samples.append(
                {"t": round(now() - self.t0, 2), "replica": rep.rid, "cause": cause,
                 "status": status, "detail": detail[:300]}
            )  # fmt: skip

    def _classify(self, rep: Replica, resp: httpx.Response, stream: bool) -> None:
        status = resp.status_code
        version = resp.headers.get("x-configbus-version")
        if version is not None and rep.last is not None:
            if (rep.last[0], int(version)) in self.injected:
                self.violations.append(
                    {"what": "answered_with_rejected_version", "replica": rep.rid,
                     "version": int(version)}
                )  # fmt: skip
        if status == 200:
            text = resp.text
            if stream:  # pieces of "served by x" spread over chunks; an error is in-band
                good = "data: [DONE]" in text and '"error"' not in text
            else:
                good = "served by" in text
            if not good:
                self._fail("upstream", rep, status, text[:200])
                return
            self.requests["ok"] += 1
            if resp.headers.get("x-configbus-provider") == "upstream-b":
                self.fallback_answers += 1
            return
        try:
            code = resp.json().get("error", {}).get("code") or ""
        except ValueError:
            code = ""
        if status == 429:
            cause = "rate_limit"
        elif status in (502, 504) or (status == 503 and code == "circuit_open"):
            cause = "upstream"
        elif status in (400, 401, 403, 404) or (status == 503 and code in ("no_config", "no_deployment")):  # fmt: skip
            cause = "config"
        else:
            cause = "redis_or_internal"
        self._fail(cause, rep, status, f"{code} {resp.text[:200]}")

    # -- watching ----------------------------------------------------------------------

    async def poll_status(self, rep: Replica) -> None:
        async with httpx.AsyncClient(timeout=1.0) as http:
            while not self.stopping:
                if not rep.down:
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        st = (await http.get(rep.child.url + "/status")).json()
                        if not rep.down:
                            self.observe(rep, st)
                await asyncio.sleep(0.1)

    def observe(self, rep: Replica, st: dict[str, Any]) -> None:
        if st.get("version") is None:
            self.violations.append({"what": "no_config", "replica": rep.rid})
            return
        self.polls += 1
        ev = (st["epoch"], int(st["version"]))
        t = round(now() - self.t0, 2)
        if ev in self.injected:
            self.violations.append(
                {"what": "ran_rejected_version", "replica": rep.rid, "version": ev[1], "t": t}
            )
        last = rep.last
        if last is not None and last != ev:
            if last[0] == ev[0] and ev[1] < last[1]:
                self.violations.append(
                    {"what": "moved_backwards", "replica": rep.rid, "from": last[1],
                     "to": ev[1], "t": t}
                )  # fmt: skip
            elif last[0] != ev[0]:
                if ev[0] in rep.left_epochs:
                    self.violations.append(
                        {"what": "returned_to_old_epoch", "replica": rep.rid, "t": t}
                    )
                rep.left_epochs.add(last[0])
        rep.last = ev
        self.acks[ev].add(rep.rid)

    async def auditor(self) -> None:
        """Reads history every second: every version any store ever listed, with its message."""
        while not self.stopping:
            with contextlib.suppress(aioredis.RedisError, OSError):
                await self.read_history()
            await asyncio.sleep(1.0)

    async def read_history(self) -> None:
        k = f"cb:{{{NAMESPACE}}}:"
        if self.redis.paused or self.redis.proc is None:
            return
        nums = [int(x) for x in await self.r.zrange(k + "history", 0, -1)]
        epoch_raw = await self.r.get(k + "epoch")
        if not nums or epoch_raw is None:
            return
        epoch = epoch_raw.decode()
        self.history_min[epoch] = min(self.history_min.get(epoch, nums[0]), nums[0])
        for v in nums:
            if (epoch, v) in self.history:
                continue
            rec_epoch, message = await self.r.hmget(k + f"v:{v}", ["epoch", "message"])
            if rec_epoch is None:
                continue
            self.history[(rec_epoch.decode(), v)] = (message or b"").decode()

    async def head(self) -> tuple[str | None, int]:
        k = f"cb:{{{NAMESPACE}}}:"
        head, epoch = await self.r.mget([k + "head", k + "epoch"])
        return (epoch.decode() if epoch else None), int(head or 0)

    async def converge(self, since: float, timeout_s: float = CONVERGE_TIMEOUT_S) -> float | None:
        """Seconds from `since` until every live replica runs head (not stale); None if never.
        Holds the publish lock, so head stays still while it looks."""
        async with self.lock:
            took = await self._converged(since, timeout_s)
            self.sre_view_s = None if took is None else await self._sre_view()
            return took

    async def _sre_view(self, timeout_s: float = 3.0) -> float | None:
        """Once every replica runs head, seconds until the admin's rollout status says so too
        (every replica alive, on head, none rejected): what an SRE sees must not lag behind."""
        started = now()
        path = f"/v1/namespaces/{NAMESPACE}/replicas"
        while now() - started < timeout_s:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                summary = (await self.admin_http[0].get(path)).json()["summary"]
                if (
                    summary["all_on_head"]
                    and summary["alive"] == len(self.replicas)
                    and summary["rejected"] == 0
                ):
                    return round(now() - started, 3)
            await asyncio.sleep(0.05)
        return None

    async def _converged(self, since: float, timeout_s: float) -> float | None:
        deadline = now() + timeout_s
        async with httpx.AsyncClient(timeout=1.0) as http:
            while now() < deadline:
                with contextlib.suppress(aioredis.RedisError, OSError, httpx.HTTPError):
                    epoch, version = await self.head()
                    live = [r for r in self.replicas if not r.down]
                    sts = [(await http.get(r.child.url + "/status")).json() for r in live]
                    if all(
                        (s["epoch"], s["version"], s["stale"]) == (epoch, version, False)
                        for s in sts
                    ):
                        return round(now() - since, 3)
                await asyncio.sleep(0.02)
        return None

    # -- faults ------------------------------------------------------------------------

    async def _redis_back(self, *, wipe: bool) -> float:
        if wipe:
            self.redis.wipe()
        await self.redis.start()
        return now()

    async def fault_redis_kill_with_data(self) -> dict[str, Any]:
        await self.redis.kill()
        await asyncio.sleep(DOWN_S)  # the fault's duration, while load and publishes go on
        back = await self._redis_back(wipe=False)
        return {"back_on_head_s": await self.converge(back)}

    async def fault_redis_restart_empty(self) -> dict[str, Any]:
        epoch, _ = await self.head()
        await self.redis.kill()
        await asyncio.sleep(DOWN_S)
        back = await self._redis_back(wipe=True)
        if epoch:
            self.wiped_epochs.add(epoch)
        # Nothing is head in the new lineage: replicas keep serving (checked by the pollers:
        # no "no_config", no backwards move) until the next publish, which they must follow.
        ev = await self.publish_now()
        published = now()
        took = await self.converge(published)
        return {
            "old_epoch": epoch,
            "new_epoch": ev[0],
            "first_version": ev[1],
            "redis_back_to_first_publish_s": round(published - back, 3),
            "back_on_head_s": took,
        }

    async def fault_redis_pause(self) -> dict[str, Any]:
        self.redis.pause()
        await asyncio.sleep(PAUSE_S)
        self.redis.resume()
        return {"paused_s": PAUSE_S, "back_on_head_s": await self.converge(now())}

    async def fault_pubsub_kill(self) -> dict[str, Any]:
        killed = await self.r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        ev = await self.publish_now()
        return {
            "connections_killed": int(killed),
            "version": ev[1],
            "back_on_head_s": await self.converge(now()),
        }

    async def fault_clients_kill(self) -> dict[str, Any]:
        """Every normal connection dropped by the server (replicas' reads and rate limiter,
        the admins' pools), as a Redis failover or a proxy in between would do."""
        async with self.lock:
            killed = await self.r.execute_command(
                "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
            )
        ev = await self.publish_now()
        return {
            "connections_killed": int(killed),
            "version": ev[1],
            "back_on_head_s": await self.converge(now()),
        }

    async def _inject(self, kind: str) -> tuple[str, int]:
        """Write a bad record straight into Redis as the new head (as a buggy or hostile
        writer would), with the change hint, under the publish lock."""
        k = f"cb:{{{NAMESPACE}}}:"
        good = canonical_body(document(0, self.mock_a.url, self.mock_b.url))
        if kind == "invalid":
            body = invalid_body(self.mock_a.url, self.mock_b.url)
            sha = sha256_hex(body)
        elif kind == "checksum":
            body, sha = good, sha256_hex(good + b" ")
        else:  # "unreadable": fields missing
            body, sha = good, sha256_hex(good)
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(k + "head", k + "epoch", k + "seq")
                    head = int(await pipe.get(k + "head") or 0)
                    epoch = (await pipe.get(k + "epoch")).decode()
                    seq = int(await pipe.get(k + "seq") or 0)
                    version = max(seq, head) + 1
                    fields: dict[str, Any] = {
                        "version": version, "parent": head, "epoch": epoch, "sha256": sha,
                        "author": "chaos-injector", "message": f"chaos inject {kind}",
                        "created_at": f"{time.time():.6f}", "kind": "publish", "source": "",
                        "body": body,
                    }  # fmt: skip
                    if kind == "unreadable":
                        del fields["body"], fields["created_at"]
                    pipe.multi()
                    pipe.set(k + "seq", version)
                    pipe.hset(k + f"v:{version}", mapping=fields)
                    pipe.set(k + "head", version)
                    pipe.zadd(k + "history", {str(version): version})
                    hint = {"version": version, "sha256": sha, "epoch": epoch}
                    pipe.publish(k + "changes", json.dumps(hint))
                    await pipe.execute()
                    break
                except aioredis.WatchError:
                    continue
        self.injected[(epoch, version)] = kind
        self.base = version
        return epoch, version

    async def _bad_head(self, kind: str) -> dict[str, Any]:
        async with self.lock:
            # Everyone on head first: that is what they must keep serving.
            await self._converged(now(), CONVERGE_TIMEOUT_S)
            head = await self.head()
            before = {r.rid: head for r in self.replicas}
            epoch, version = await self._inject(kind)
            injected_at = now()
            # Every replica must NACK it (reason in the store's replica status) and keep
            # serving what it had.
            nacked: dict[str, float] = {}
            deadline = now() + 5
            async with httpx.AsyncClient(timeout=1.0) as http:
                while len(nacked) < len(self.replicas) and now() < deadline:
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        rows = (
                            await self.admin_http[0].get(f"/v1/namespaces/{NAMESPACE}/replicas")
                        ).json()["replicas"]
                        for row in rows:
                            if row["rejected_version"] == version and row["epoch"] == epoch:
                                nacked.setdefault(row["replica_id"], round(now() - injected_at, 3))
                    await asyncio.sleep(0.05)
                still = {}
                for r in self.replicas:
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        st = (await http.get(r.child.url + "/status")).json()
                        still[r.rid] = (st["epoch"], st["version"]) == before[r.rid]
            reasons = []
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                rows = (
                    await self.admin_http[0].get(f"/v1/namespaces/{NAMESPACE}/replicas")
                ).json()["replicas"]
                reasons = sorted({str(row["reason"])[:120] for row in rows if row["reason"]})
        # The fix, through the admin, on top of the bad head.
        ev = await self.publish_now()
        took = await self.converge(now())
        ok = len(nacked) == len(self.replicas) and all(still.values())
        return {
            "injected_version": version,
            "nack_s": nacked,
            "kept_serving_old": still,
            "reasons": reasons,
            "fix_version": ev[1],
            "back_on_head_s": took,
            "ok": ok and took is not None,
        }

    async def fault_invalid_document(self) -> dict[str, Any]:
        return await self._bad_head("invalid")

    async def fault_corrupt_record(self) -> dict[str, Any]:
        kind = "checksum" if sum(1 for f in self.faults if f["kind"] == "corrupt_record") % 2 == 0 else "unreadable"  # fmt: skip
        out = await self._bad_head(kind)
        out["corruption"] = kind
        return out

    async def fault_two_admins(self) -> dict[str, Any]:
        async with self.lock:
            _, base = await self.head()
            ps = [self._next(), self._next()]
            for p in ps:
                p.if_match = base
            resps = await asyncio.gather(self._put(0, ps[0]), self._put(1, ps[1]))
            settled = [self._record(p, r, f"admin-{i + 1}") for i, (p, r) in enumerate(zip(ps, resps, strict=True))]  # fmt: skip
        codes = sorted(r.status_code for r in resps)
        winner = next((ev for ev in settled if ev is not None), None)
        loser = next((r for r in resps if r.status_code == 409), None)
        current = loser.json()["error"].get("current_version") if loser is not None else None
        ok = codes == [201, 409] and winner is not None and current == winner[1]
        took = await self.converge(now())
        return {
            "base": base,
            "statuses": codes,
            "winner": winner[1] if winner else None,
            "loser_told_current": current,
            "back_on_head_s": took,
            "ok": ok and took is not None,
        }

    async def fault_upstream_fail(self) -> dict[str, Any]:
        before = self.fallback_answers
        failed_before = sum(self.failed.values())
        async with httpx.AsyncClient(timeout=2) as http:
            await http.post(self.mock_a.url + "/_control", json={"fail_rate": 1.0, "status": 500})
            try:
                await asyncio.sleep(3.0)
                breakers = {}
                for r in self.replicas:
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        st = (await http.get(r.child.url + "/status")).json()
                        breakers[r.rid] = st["providers"]["upstream-a"]["breaker"]
            finally:
                await http.post(self.mock_a.url + "/_control", json={"fail_rate": 0.0})
        fallback = self.fallback_answers - before
        failed = sum(self.failed.values()) - failed_before
        return {
            "fallback_answers": fallback,
            "failed_meanwhile": failed,
            "primary_breakers": breakers,
            "ok": fallback > 0 and failed == 0,
        }

    async def fault_replica_restart(self) -> dict[str, Any]:
        i = sum(1 for f in self.faults if f["kind"] == "replica_restart") % len(self.replicas)
        rep = self.replicas[i]
        await self.redis.kill()
        rep.down = True
        deadline = now() + 15
        while rep.in_flight and now() < deadline:  # noqa: ASYNC110 - a bounded poll
            await asyncio.sleep(0.01)
        # What it runs now, with Redis gone, is what its last-known-good file must give back.
        expected = rep.last
        async with httpx.AsyncClient(timeout=2) as http:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                st = (await http.get(rep.child.url + "/status")).json()
                expected = (st["epoch"], int(st["version"]))
        t_stop = now()
        code = await rep.child.stop(signal.SIGTERM)
        stopped_s = round(now() - t_stop, 3)
        if rep.http is not None:
            await rep.http.aclose()
        rep.child.start()
        out: dict[str, Any] = {"replica": rep.rid, "exit_code": code, "stop_s": stopped_s}
        try:
            await rep.child.wait_http("/health/ready", timeout_s=30)
            async with httpx.AsyncClient(timeout=5) as http:
                st = (await http.get(rep.child.url + "/status")).json()
                chat = await http.post(
                    rep.child.url + "/v1/chat/completions",
                    json={"model": "m", "messages": [{"role": "user", "content": "after"}]},
                    headers={"authorization": f"Bearer {SAMPLE_CLIENT_KEY}"},
                )
            out.update(
                ready_while_redis_down=True,
                stale=st["stale"],
                version=st["version"],
                expected_version=expected[1] if expected else None,
                chat_status=chat.status_code,
            )
            out["ok"] = (
                st["stale"] is True
                and expected is not None
                and (st["epoch"], st["version"]) == expected
                and chat.status_code == 200
            )
            if st["version"] is not None:
                self.observe(rep, st)
        except (TimeoutError, RuntimeError, httpx.HTTPError) as exc:
            out.update(ready_while_redis_down=False, error=str(exc)[:500], ok=False)
        rep.http = self._client()
        rep.down = False
        back = await self._redis_back(wipe=False)
        out["back_on_head_s"] = await self.converge(back)
        if out["back_on_head_s"] is None:
            out["ok"] = False
        return out

    async def fault_loop(self, end: float) -> None:
        i = 0
        while now() < end - 12:
            kind = FAULTS[i % len(FAULTS)]
            i += 1
            started = now()
            try:
                result = await getattr(self, f"fault_{kind}")()
            except Exception as exc:  # a fault step that broke is a finding, not a crash
                result = {"error": f"{type(exc).__name__}: {exc}"[:500], "ok": False}
                if self.redis.paused:
                    self.redis.resume()
                if self.redis.proc is None:
                    await self.redis.start()
            took = result.get("back_on_head_s")
            result.setdefault("ok", took is not None and took <= BACK_ON_HEAD_S)
            if kind != "upstream_fail":
                result["sre_view_s"] = self.sre_view_s
                if self.sre_view_s is None:
                    result["ok"] = False
            if kind != "upstream_fail" and took is not None and took > BACK_ON_HEAD_S:
                result["ok"] = False
            self.faults.append(
                {"kind": kind, "at_s": round(started - self.t0, 2),
                 "duration_s": round(now() - started, 2), **result}
            )  # fmt: skip
            print(json.dumps(self.faults[-1]), file=sys.stderr, flush=True)
            await asyncio.sleep(self.rng.uniform(1.0, 2.0))

    # -- the run -----------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        await self.start()
        self.t0 = now()
        end = self.t0 + self.duration_s
        tasks = [asyncio.create_task(self.publisher()), asyncio.create_task(self.auditor())]
        for rep in self.replicas:
            tasks.append(asyncio.create_task(self.poll_status(rep)))
            tasks += [asyncio.create_task(self.load(rep, w)) for w in range(self.concurrency)]
        try:
            await self.fault_loop(end)
            await asyncio.sleep(max(0.0, end - now()))
            # Quiet end: the last pending publish settles, then everyone must be on head.
            self.stopping = True
            await asyncio.gather(*tasks, return_exceptions=True)
            tasks = []
            deadline = now() + 15
            while self.pending is not None and now() < deadline:
                await self.publish_step()
                await asyncio.sleep(0.1)
            final = await self.converge(now())
            async with httpx.AsyncClient(timeout=2) as http:
                for rep in self.replicas:
                    try:
                        self.observe(rep, (await http.get(rep.child.url + "/status")).json())
                    except (httpx.HTTPError, ValueError) as exc:
                        self.violations.append(
                            {"what": "not_answering_at_end", "replica": rep.rid, "error": repr(exc)}
                        )
            await self.read_history()
            return await self.summary(final)
        finally:
            self.stopping = True
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def summary(self, final_converge_s: float | None) -> dict[str, Any]:
        head_epoch, head = await self.head()
        ids = {r.rid for r in self.replicas}
        # Publishes: every 201 a distinct version in history, every history entry ours.
        keys_in_history: dict[tuple[str, str], list[int]] = defaultdict(list)
        unknown = []
        for (epoch, v), message in sorted(self.history.items()):
            if (epoch, v) in self.injected:
                continue
            if not message.startswith(f"chaos-{self.run_id}-"):
                unknown.append({"epoch": epoch, "version": v, "message": message[:80]})
            keys_in_history[(epoch, message)].append(v)
        doubled = list(self.doubled) + [
            {"epoch": e, "key": key, "versions": vs}
            for (e, key), vs in keys_in_history.items()
            if len(vs) > 1
        ]
        lost, lost_to_wipe, unverified = [], 0, 0
        for (epoch, v), key in self.created.items():
            if (epoch, v) in self.history:
                if self.history[(epoch, v)] != key:
                    lost.append({"version": v, "key": key, "history_says": self.history[(epoch, v)]})  # fmt: skip
            elif epoch in self.wiped_epochs:
                lost_to_wipe += 1
            elif v < self.history_min.get(epoch, 0):
                unverified += 1  # trimmed before the auditor saw it
            else:
                lost.append({"epoch": epoch, "version": v, "key": key})
        # Acknowledgement: by every replica, or superseded by a later version.
        by_epoch: dict[str, list[int]] = defaultdict(list)
        for epoch, v in self.created:
            by_epoch[epoch].append(v)
        acked_all = superseded = 0
        unacked = []
        for epoch, v in self.created:
            if self.acks.get((epoch, v), set()) >= ids:
                acked_all += 1
            elif (
                max(by_epoch[epoch]) > v
                or epoch in self.wiped_epochs
                or any(ev[0] == epoch and ev[1] > v for ev in self.injected)
            ):
                superseded += 1
            else:
                unacked.append({"epoch": epoch, "version": v, "acked_by": sorted(self.acks.get((epoch, v), set()))})  # fmt: skip
        slow = [
            {"kind": f["kind"], "at_s": f["at_s"], "back_on_head_s": f.get("back_on_head_s")}
            for f in self.faults
            if f["kind"] != "upstream_fail"
            and (f.get("back_on_head_s") is None or f["back_on_head_s"] > BACK_ON_HEAD_S)
        ]
        config_or_redis = self.failed["config"] + self.failed["redis_or_internal"] + self.failed["transport"]  # fmt: skip
        checks = {
            "no_request_failed_for_config_or_redis": config_or_redis == 0,
            "no_request_failed_at_all": self.requests["failed"] == 0,
            "every_publish_acked_or_superseded": not unacked,
            "no_replica_violation": not self.violations,
            "back_on_head_within_2s": not slow,
            "every_fault_ok": all(f.get("ok") for f in self.faults),
            "no_publish_lost": not lost,
            "no_publish_doubled": not doubled,
            "no_unknown_version": not unknown,
            # the admin's Redis timeout is 1 s: a 503 must not cost more than one of them
            "admin_503_fast": self.slowest_503_s < 1.5,
            "sre_view_follows": all(
                f.get("sre_view_s") is not None for f in self.faults if f["kind"] != "upstream_fail"
            ),
            "final_all_on_head": final_converge_s is not None,
            "every_fault_kind_ran": {f["kind"] for f in self.faults} >= set(FAULTS),
        }
        recovery: dict[str, list[float | None]] = defaultdict(list)
        for f in self.faults:
            recovery[f["kind"]].append(f.get("back_on_head_s"))
        return {
            "ok": all(checks.values()),
            "checks": checks,
            "minutes": round(self.duration_s / 60, 2),
            "seed": self.seed,
            "requests": {
                "sent": self.requests["sent"],
                "ok": self.requests["ok"],
                "failed": self.requests["failed"],
                "failed_by_cause": {
                    c: self.failed[c]
                    for c in ("config", "redis_or_internal", "transport", "upstream", "rate_limit")
                },
                "answered_by_fallback": self.fallback_answers,
                "failure_samples": self.failure_samples,
            },
            "versions": {
                "published": len(self.created),
                "acknowledged_by_every_replica": acked_all,
                "superseded_before_every_ack": superseded,
                "neither": unacked,
                "injected_bad": len(self.injected),
                "lost_with_wiped_epoch": lost_to_wipe,
                "trimmed_before_audit": unverified,
                "lost": lost,
                "doubled": doubled,
                "unknown_in_history": unknown,
                "publish_answers": dict(self.publish_outcomes),
                "slowest_503_s": round(self.slowest_503_s, 3),
                "final_head": head,
                "final_epoch": head_epoch,
                "epochs": len({e for e, _ in self.created}),
            },
            "replicas": {
                "status_polls": self.polls,
                "violations": self.violations[:50],
                "violation_count": len(self.violations),
                "final_converge_s": final_converge_s,
            },
            "faults": {
                "count": len(self.faults),
                "per_kind": {k: len(v) for k, v in recovery.items()},
                "back_on_head_s": {k: v for k, v in recovery.items()},
                "slow_or_never": slow,
                "log": self.faults,
            },
            "run_dir": str(self.run_dir),
        }


def canonical_body(data: dict[str, Any]) -> bytes:
    """A valid document body as the admin would store it, minus encryption (the secret
    becomes an env reference, so no key is needed)."""
    from configbus.validation import to_document

    data = json.loads(json.dumps(data))
    data["providers"][0].pop("api_key")
    data["providers"][0]["api_key_env"] = "UPSTREAM_B_KEY"
    return canonical(to_document(data))


async def soak(args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    runner = Soak(args.minutes, run_dir, args.seed, args.concurrency)
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Stopped from outside: cancel the run; the cleanup below still stops every child.
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    try:
        return await runner.run()
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "run_dir": str(run_dir)}
    finally:
        await runner.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=random.SystemRandom().randrange(10**6))
    p.add_argument("--concurrency", type=int, default=2, help="client loops per replica")
    p.add_argument("--run-dir", help="logs and files here (kept); default a temp dir")
    p.add_argument("--json-out", help="also write the summary here")
    p.add_argument("--keep", action="store_true", help="keep the temp run dir on success")
    args = p.parse_args(argv)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="configbus-chaos-")).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        summary = asyncio.run(soak(args, run_dir))
    except asyncio.CancelledError:
        print(f"interrupted; everything it started is stopped. logs: {run_dir}", file=sys.stderr)
        return 130
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text)
    if summary.get("ok") and not args.run_dir and not args.keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        print(f"logs: {run_dir}", file=sys.stderr)
    return 0 if summary.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
