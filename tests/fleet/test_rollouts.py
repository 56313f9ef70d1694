"""Guarded rollouts, proven with real processes: a redis-server, two admin services, three
proxy replicas (one labelled `tier=canary`) and a mock upstream, each replica under a steady
client load. Admins are driven over HTTP; every process is stopped by PID.

What is measured, and asserted: the replicas outside the stage never run the rollout's
version and fail no request; a broken canary is aborted by the guard within 5 s of applying
the version and is back on head within 100 ms of the abort; a NACK aborts at once; a good
version is promoted after its bake; a SIGKILLed admin's rollout is finished by the other
admin, promoted once; a restarted replica comes back on what its labels select. Share
stages (10% → 50% → 100%) run on 10 in-process watchers with a real admin app (its own
driver) against the same Redis: 10 more processes would not fit the time budget.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import redis

from configbus.crypto import generate_key
from configbus.document import Document
from configbus.testing import SAMPLE_CLIENT_KEY, sample_data
from configbus.watcher import Watcher
from tests.admin.helpers import app_for, auth
from tests.admin.helpers import client as admin_client
from tests.admin.test_rollout_driver import Fleet as WatcherFleet
from tests.core.helpers import make_store
from tests.proxy.helpers import SECRET_KEY, Mock, Replica, data_for
from tests.support import RedisServer, Service, configbus_cmd, free_port

pytestmark = pytest.mark.slow

# The admins encrypt new secrets with NEW_KEY, which no replica holds yet (a key rotation
# half done): a rollout carrying a secret is NACKed by the canary. Other documents carry
# no secret (the key comes from an env var), so every replica reads them.
NEW_KEY = generate_key()
TOKEN = "e2e-rollout-token-" + secrets.token_hex(6)
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
RATE = 50.0  # requests per second per replica
ABORT_WITHIN_S = 5.0
BACK_ON_HEAD_S = 0.1


class Admin:
    def __init__(self, redis_url: str, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = Service(
            configbus_cmd("admin", "--port", str(self.port), "--log-level", "warning"),
            env={
                "CONFIGBUS_REDIS_URL": redis_url,
                "CONFIGBUS_ADMIN_TOKENS": f"e2e:admin:{TOKEN}",
                "CONFIGBUS_SECRET_KEYS": f"{NEW_KEY},{SECRET_KEY}",
                "CONFIGBUS_ADMIN_PUBLISH_LIMIT": "1000000",
            },
            name=name,
        )

    @property
    def pid(self) -> int | None:
        return self.service.child.pid


class Fleet:
    def __init__(self, redis: RedisServer) -> None:
        self.redis_url = redis.url
        self.ns = "e2e-ro-" + secrets.token_hex(3)
        self.mock = Mock("A")
        self.dead_port = free_port()  # nothing listens there
        self.admins = [Admin(redis.url, f"admin-{i}") for i in (1, 2)]
        canary = {"CONFIGBUS_REPLICA_LABELS": "tier=canary"}
        self.canary = Replica(redis.url, self.ns, replica_id="r-canary", env=canary)
        self.others = [Replica(redis.url, self.ns, replica_id=f"r-{i}") for i in (1, 2)]
        self.replicas = [self.canary, *self.others]
        self.n = 0

    @property
    def path(self) -> str:
        return f"/v1/namespaces/{self.ns}"

    def doc(self, *, provider_port: int | None = None, secret: str | None = None) -> dict[str, Any]:
        """A new valid document (distinct from the last); `m` has no fallback, so a broken
        provider shows as failed requests."""
        self.n += 1
        data = data_for(self.mock, self.mock)
        provider = data["providers"][0]
        provider.pop("api_key")
        provider["api_key_env"] = "UPSTREAM_B_KEY"
        if secret is not None:
            provider.pop("api_key_env")
            provider["api_key"] = {"secret": secret}
        if provider_port is not None:
            provider["base_url"] = f"http://127.0.0.1:{provider_port}/v1"
        data["models"][0].pop("fallbacks")
        data["metadata"] = {"owner": "e2e", "change": str(self.n)}
        return data

    def admin(self, i: int = 0) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.admins[i].url, headers=HEADERS, timeout=5)

    def live_admin(self) -> httpx.AsyncClient:
        up = [i for i, a in enumerate(self.admins) if a.service.child.running()]
        return self.admin(up[0])


@pytest.fixture(scope="module")
def redis_own() -> Iterator[RedisServer]:
    """A redis-server for this module: every admin's driver drives every namespace of its
    Redis, so an in-process admin another test left running would also drive these."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def fleet(redis_own: RedisServer) -> Iterator[Fleet]:
    f = Fleet(redis_own)
    services = [f.mock.service, *(a.service for a in f.admins)]
    services += [r.service for r in f.replicas]
    try:
        for s in services:
            s.start()
        f.mock.service.wait_http(f.mock.url + "/_stats")
        for a in f.admins:
            a.service.wait_http(a.url + "/health/ready")
        for r in f.replicas:
            r.service.wait_http(r.url + "/health/live")
        yield f
    finally:
        for s in services:
            s.stop()


# -- observing the fleet -------------------------------------------------------------------


@dataclass
class Seen:
    """One replica as the load and the status poller saw it."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)
    served: Counter[int] = field(default_factory=Counter)  # version header of 200 answers
    applied: list[tuple[int, float]] = field(default_factory=list)  # (version, applied_at)

    def applied_at(self, version: int, after: float = 0.0) -> float | None:
        return next((t for v, t in self.applied if v == version and t >= after), None)

    def ran(self, version: int) -> bool:
        return version in self.served or any(v == version for v, _ in self.applied)


class Observer:
    """A steady, bounded load on each replica (one request at a time, paced at RATE) and a
    /status poller per replica recording each version it applied and when."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.seen = {r.service.name: Seen() for r in replicas}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _load(self, rep: Replica, seen: Seen) -> None:
        interval = 1.0 / RATE
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        auth_header = {"authorization": f"Bearer {SAMPLE_CLIENT_KEY}"}
        async with httpx.AsyncClient(timeout=5) as c:
            due = time.monotonic()
            while not self._stop.is_set():
                seen.sent += 1
                try:
                    resp = await c.post(
                        rep.url + "/v1/chat/completions", json=body, headers=auth_header
                    )
                    if resp.status_code == 200:
                        seen.ok += 1
                        seen.served[int(resp.headers["x-configbus-version"])] += 1
                    else:
                        seen.failed += 1
                        seen.failures.append(f"{resp.status_code} {resp.text[:120]}")
                except httpx.HTTPError as exc:
                    seen.failed += 1
                    seen.failures.append(repr(exc))
                due = max(due + interval, time.monotonic() - interval)
                await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def _poll(self, rep: Replica, seen: Seen) -> None:
        async with httpx.AsyncClient(timeout=2) as c:
            while not self._stop.is_set():
                try:
                    st = (await c.get(rep.url + "/status")).json()
                    row = (int(st["version"]), float(st["applied_at"]))
                    if not seen.applied or seen.applied[-1] != row:
                        seen.applied.append(row)
                except (httpx.HTTPError, ValueError, TypeError, KeyError):
                    pass
                await asyncio.sleep(0.02)

    @asynccontextmanager
    async def running(self, *, load: bool = True) -> AsyncIterator[Observer]:
        for rep in self.replicas:
            seen = self.seen[rep.service.name]
            self._tasks.append(asyncio.create_task(self._poll(rep, seen)))
            if load:
                self._tasks.append(asyncio.create_task(self._load(rep, seen)))
        try:
            yield self
        finally:
            self._stop.set()
            async with asyncio.timeout(10):
                await asyncio.gather(*self._tasks, return_exceptions=True)

    async def warm(self, n: int = 25) -> None:
        """Until every replica answered `n` requests."""
        async with asyncio.timeout(10):
            while any(s.ok < n for s in self.seen.values()):  # noqa: ASYNC110 - counters
                await asyncio.sleep(0.05)


# -- driving the admin ---------------------------------------------------------------------


async def until(condition: Any, timeout_s: float, what: str) -> Any:
    """Poll an async condition (bounded); its truthy value."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                value = await condition()
                if value:
                    return value
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s}s waiting for {what}") from None


async def status(rep: Replica) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=2) as c:
        return (await c.get(rep.url + "/status")).json()  # type: ignore[no-any-return]


async def publish_stable(fleet: Fleet) -> int:
    """A plain publish every replica runs before the rollout; its version."""
    async with fleet.live_admin() as admin:
        resp = await admin.put(fleet.path + "/config", json={"document": fleet.doc()})
        assert resp.status_code in (200, 201), resp.text
        v = int(resp.json()["version"])

    async def all_on() -> bool:
        return [(await status(r))["version"] for r in fleet.replicas] == [v] * 3

    await until(all_on, 5, f"every replica on version {v}")
    return v


async def start_rollout(fleet: Fleet, document: dict[str, Any], bake_s: float, msg: str) -> int:
    async with fleet.live_admin() as admin:
        resp = await admin.post(
            fleet.path + "/rollouts",
            json={
                "document": document,
                "message": msg,
                "stages": [{"selector": "tier=canary", "bake_s": bake_s}],
            },
        )
    assert resp.status_code == 201, resp.text
    return int(resp.json()["version"])


async def rollout(fleet: Fleet) -> dict[str, Any]:
    async with fleet.live_admin() as admin:
        resp = await admin.get(fleet.path + "/rollout")
    assert resp.status_code == 200, resp.text
    return resp.json()["rollout"]  # type: ignore[no-any-return]


async def ended(fleet: Fleet, timeout_s: float) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        r = await rollout(fleet)
        return None if r["state"] == "running" else r

    return await until(done, timeout_s, "the rollout to end")  # type: ignore[no-any-return]


async def audit(fleet: Fleet, action: str, rollout_id: str) -> list[dict[str, Any]]:
    async with fleet.live_admin() as admin:
        resp = await admin.get(fleet.path + "/audit", params={"count": 200})
    assert resp.status_code == 200, resp.text
    return [
        e
        for e in resp.json()["entries"]
        if e["action"] == action and e["fields"].get("rollout") == rollout_id
    ]


async def head(fleet: Fleet) -> int:
    async with fleet.live_admin() as admin:
        return int((await admin.get(fleet.path + "/replicas")).json()["summary"]["head"])


def report(what: str, **figures: Any) -> None:
    print(f"\n[rollout e2e] {what}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# -- the tests -----------------------------------------------------------------------------


async def test_a_canary_on_a_dead_provider_is_aborted_by_the_guard(fleet: Fleet) -> None:
    stable = await publish_stable(fleet)
    obs = Observer(fleet.replicas)
    async with obs.running():
        await obs.warm()
        broken = fleet.doc(provider_port=fleet.dead_port)
        v = await start_rollout(fleet, broken, bake_s=10, msg="provider moved (to a dead port)")
        r = await ended(fleet, 10)
        canary = obs.seen["r-canary"]

        async def canary_back() -> dict[str, Any] | None:
            st = await status(fleet.canary)
            return st if st["version"] == stable else None

        back = await until(canary_back, 2, "the canary back on the stable head")
        await asyncio.sleep(0.5)  # the load goes on after the abort
    assert r["state"] == "aborted" and r["version"] == v
    assert r["reason"].startswith("stage 1 error rate 100% vs baseline 0% over"), r["reason"]
    applied = canary.applied_at(v)
    assert applied is not None, canary.applied
    abort_s = r["ended_at"] - applied
    back_s = back["applied_at"] - r["ended_at"]
    report(
        "dead provider",
        abort_after_canary_apply_s=round(abort_s, 3),
        canary_back_on_head_ms=round(back_s * 1000, 1),
        canary_failed=canary.failed,
        others_failed=[obs.seen[r.service.name].failed for r in fleet.others],
        sent={k: s.sent for k, s in obs.seen.items()},
    )
    assert 0 < abort_s < ABORT_WITHIN_S
    assert 0 <= back_s < BACK_ON_HEAD_S
    assert canary.failed > 0  # the guard saw real failures
    for rep in fleet.others:
        seen = obs.seen[rep.service.name]
        assert not seen.ran(v), (rep.service.name, seen.applied, seen.served)
        assert seen.failed == 0, seen.failures[:5]
        assert seen.sent > 50
    assert await head(fleet) == stable
    via_api = await rollout(fleet)
    assert via_api["reason"] == r["reason"]
    aborts = await audit(fleet, "rollout_abort", r["id"])
    assert len(aborts) == 1 and aborts[0]["fields"]["message"] == r["reason"]


async def test_a_good_canary_is_promoted_after_its_bake(fleet: Fleet) -> None:
    await publish_stable(fleet)
    bake = 2.0
    obs = Observer(fleet.replicas)
    async with obs.running():
        await obs.warm()
        v = await start_rollout(fleet, fleet.doc(), bake_s=bake, msg="a good change")
        r = await ended(fleet, bake + 8)

        async def all_on() -> bool:
            return [(await status(rep))["version"] for rep in fleet.replicas] == [v] * 3

        await until(all_on, 2, f"every replica on version {v}")
        await asyncio.sleep(0.3)
    assert r["state"] == "promoted", r
    assert r["ended_at"] - r["stage_started_at"] >= bake
    assert await head(fleet) == v
    canary_on = obs.seen["r-canary"].applied_at(v)
    assert canary_on is not None and canary_on < r["ended_at"]
    spread = []
    for rep in fleet.others:
        seen = obs.seen[rep.service.name]
        at = seen.applied_at(v)
        assert at is not None and at >= r["ended_at"], (rep.service.name, seen.applied)
        spread.append(round((at - r["ended_at"]) * 1000, 1))
    report(
        "good document",
        bake_s=bake,
        promoted_after_s=round(r["ended_at"] - r["stage_started_at"], 3),
        others_on_head_after_promote_ms=spread,
        failed={k: s.failed for k, s in obs.seen.items()},
    )
    for name, seen in obs.seen.items():
        assert seen.failed == 0, (name, seen.failures[:5])
    promotes = await audit(fleet, "rollout_promote", r["id"])
    assert len(promotes) == 1


async def test_a_canary_nack_aborts_the_rollout_at_once(fleet: Fleet) -> None:
    stable = await publish_stable(fleet)
    obs = Observer(fleet.replicas)
    async with obs.running():
        await obs.warm(5)
        # Encrypted with NEW_KEY, which no replica holds: the canary cannot decrypt it.
        doc = fleet.doc(secret="sk-rotated-" + secrets.token_hex(4))
        v = await start_rollout(fleet, doc, bake_s=30, msg="a key the replicas lack")
        r = await ended(fleet, 5)
        await asyncio.sleep(0.3)
    took = r["ended_at"] - r["started_at"]
    report("NACK", abort_after_start_s=round(took, 3))
    assert r["state"] == "aborted"
    assert r["reason"].startswith(f"stage 1: replica r-canary rejected version {v}"), r["reason"]
    assert took < 2.0  # no traffic needed, no bake waited
    assert await head(fleet) == stable
    for name, seen in obs.seen.items():
        assert not seen.ran(v), (name, seen.applied)
        assert seen.failed == 0, (name, seen.failures[:5])
    assert (await status(fleet.canary))["version"] == stable


async def test_a_replica_restarted_mid_rollout_comes_back_on_what_its_labels_select(
    fleet: Fleet,
) -> None:
    stable = await publish_stable(fleet)
    v = await start_rollout(fleet, fleet.doc(), bake_s=60, msg="long bake")

    async def canary_on() -> bool:
        return (await status(fleet.canary))["version"] == v

    await until(canary_on, 3, "the canary on the rollout's version")
    restarted = [fleet.canary, fleet.others[0]]
    for rep in restarted:
        await asyncio.to_thread(rep.service.stop)
    for rep in restarted:
        rep.service.start()
    for rep in restarted:
        await asyncio.to_thread(rep.service.wait_http, rep.url + "/health/ready")
    after = {rep.service.name: (await status(rep))["version"] for rep in fleet.replicas}
    assert after == {"r-canary": v, "r-1": stable, "r-2": stable}, after
    async with fleet.live_admin() as admin:
        resp = await admin.post(fleet.path + "/rollout/abort", json={"message": "done looking"})
    assert resp.status_code == 200, resp.text

    async def canary_back() -> bool:
        return (await status(fleet.canary))["version"] == stable

    await until(canary_back, 2, "the canary back on head after a manual abort")


async def test_a_rollback_during_a_rollout_aborts_it_first(fleet: Fleet) -> None:
    stable = await publish_stable(fleet)
    await publish_stable(fleet)  # head; the rollback goes to the version before it
    v = await start_rollout(fleet, fleet.doc(), bake_s=60, msg="rolled back by an SRE")

    async def canary_on() -> bool:
        return (await status(fleet.canary))["version"] == v

    await until(canary_on, 3, "the canary on the rollout's version")
    async with fleet.live_admin() as admin:
        resp = await admin.post(
            fleet.path + "/rollback", json={"to_version": stable, "message": "back, now"}
        )
    assert resp.status_code == 201, resp.text
    back = int(resp.json()["version"])
    r = await rollout(fleet)
    assert r["state"] == "aborted" and r["reason"].startswith("aborted by e2e"), r
    assert len(await audit(fleet, "rollout_abort", r["id"])) == 1

    async def all_on() -> bool:
        return [(await status(rep))["version"] for rep in fleet.replicas] == [back] * 3

    await until(all_on, 3, f"every replica on the rollback's version {back}")


async def test_a_sigkilled_admin_is_replaced_and_the_rollout_promoted_once(fleet: Fleet) -> None:
    await publish_stable(fleet)
    bake, lease = 4.0, 5.0
    obs = Observer(fleet.replicas)
    async with obs.running():
        await obs.warm()
        v = await start_rollout(fleet, fleet.doc(), bake_s=bake, msg="admin dies mid-bake")
        r0 = await rollout(fleet)
        lease_key = f"cb:{{{fleet.ns}}}:rollout:lease"

        async def holder() -> str | None:
            raw = await asyncio.to_thread(lambda: _redis_get(fleet.redis_url, lease_key))
            return raw or None

        leader = await until(holder, 3, "an admin to take the rollout's lease")
        victim = next((a for a in fleet.admins if f"-{a.pid}-" in leader), None)
        assert victim is not None, f"the lease is held by {leader!r}, none of our admins"
        await asyncio.sleep(1.0)  # mid-bake
        assert (await rollout(fleet))["state"] == "running"
        killed_at = time.time()
        await asyncio.to_thread(victim.service.stop, sig=signal.SIGKILL, timeout=5)
        r = await ended(fleet, lease + bake + 5)
        await asyncio.sleep(0.3)
    assert r["state"] == "promoted", r
    finished_s = r["ended_at"] - killed_at
    report(
        "admin SIGKILLed mid-bake",
        promoted_after_kill_s=round(finished_s, 3),
        bound_s=lease + bake,
        bake_from_start_s=round(r["ended_at"] - r0["stage_started_at"], 3),
    )
    assert finished_s <= lease + bake
    promotes = await audit(fleet, "rollout_promote", r["id"])
    assert len(promotes) == 1, promotes
    assert str(victim.pid) not in promotes[0]["actor"]
    assert await head(fleet) == v
    for name, seen in obs.seen.items():
        assert seen.failed == 0, (name, seen.failures[:5])
    victim.service.start()
    victim.service.wait_http(victim.url + "/health/ready")


def _redis_get(url: str, key: str) -> str:
    c = redis.Redis.from_url(url)
    try:
        raw = c.get(key)
        return raw.decode() if isinstance(raw, bytes) else ""
    finally:
        c.close()


async def test_share_stages_pick_1_5_10_of_10_replicas_and_keep_them_across_restarts(
    redis_own: RedisServer, namespace: str
) -> None:
    """10 in-process watchers (replicas) and the real admin app (with its driver) over
    ASGI, against the real Redis."""
    ids = [f"w{i:02d}" for i in range(10)]
    redis_server = redis_own
    store = make_store(redis_server.url, namespace)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(store.redis.aclose)
        watchers = WatcherFleet(stack, redis_server.url, namespace)
        admin = await stack.enter_async_context(admin_client(app_for(redis_server.url)))
        base = f"/v1/namespaces/{namespace}"
        doc = fleet_doc_data(0)
        assert (await admin.put(base + "/config", json={"document": doc}, headers=auth("admin"))).status_code == 201  # fmt: skip
        for rid in ids:
            await watchers.add(rid)
        await until_sync(lambda: all(on(w, 1) for w in watchers.watchers.values()), 5)

        async def feed() -> None:  # traffic for the guard, on whatever each replica runs
            while True:
                for rid in list(watchers.watchers):
                    if watchers.watchers[rid].current is not None:
                        watchers.serve(rid, 5)
                await asyncio.sleep(0.05)

        feeder = asyncio.create_task(feed())
        stack.callback(feeder.cancel)

        async def all_live() -> bool:
            rows = (await admin.get(base + "/replicas", headers=auth("admin"))).json()
            return rows["summary"]["alive"] == len(ids)  # type: ignore[no-any-return]

        async def run_rollout(n: int) -> list[tuple[str, ...]]:
            # A share is of the replicas live when a stage starts: let every one report first.
            await until(all_live, 5, "every replica's heartbeat")
            # The 50% stage bakes long enough for every replica to restart within it.
            stages = [
                {"selector": s, "bake_s": b} for s, b in (("10%", 1.0), ("50%", 2.5), ("100%", 0.3))
            ]
            resp = await admin.post(
                base + "/rollouts",
                json={"document": fleet_doc_data(n), "message": f"shares {n}", "stages": stages,
                      "guard": {"min_requests": 5}},
                headers=auth("admin"),
            )  # fmt: skip
            assert resp.status_code == 201, resp.text
            v = int(resp.json()["version"])
            picks: list[tuple[str, ...]] = []
            for stage, want in enumerate((1, 5, 10)):

                async def at_stage(stage: int = stage) -> dict[str, Any] | None:
                    r = (await admin.get(base + "/rollout", headers=auth("admin"))).json()
                    r = r["rollout"]
                    return r if r["stage"] >= stage or r["state"] != "running" else None

                r = await until(at_stage, 5, f"stage {stage + 1}")
                assert r["state"] == "running" or stage == 2, r
                running = await until_sync(
                    lambda want=want: _on_version(watchers, v, want), 5, f"{want} on {v}"
                )
                picks.append(running)
                if stage == 1:
                    # Every replica restarts (a new process each): the same 5 run it after.
                    for rid in ids:
                        await watchers.watchers[rid].stop()
                        await watchers.add(rid)
                    again = await until_sync(lambda: _on_version(watchers, v, 5), 5, "5 again")
                    assert again == running
            await until(lambda: _promoted(admin, base), 5, "promotion after the last stage")
            return picks

        first = await run_rollout(1)
        assert [len(p) for p in first] == [1, 5, 10]
        assert set(first[0]) <= set(first[1]) <= set(first[2])
        second = await run_rollout(2)
        assert second == first  # stable per replica id, rollout after rollout
        report("shares", stage_members=[list(p) for p in first])


def fleet_doc_data(n: int) -> dict[str, Any]:
    data = sample_data()
    data["providers"][0].pop("api_key")
    data["providers"][0]["api_key_env"] = "UPSTREAM_B_KEY"
    data["metadata"] = {"change": str(n)}
    return data


def on(w: Watcher[Document, Document], v: int) -> bool:
    return w.current is not None and w.current.version == v


def _on_version(watchers: WatcherFleet, v: int, want: int) -> tuple[str, ...] | None:
    running = tuple(sorted(rid for rid, w in watchers.watchers.items() if on(w, v)))
    return running if len(running) == want else None


async def until_sync(condition: Any, timeout_s: float, what: str = "") -> Any:
    async def check() -> Any:
        return condition()

    return await until(check, timeout_s, what or str(condition))


async def _promoted(admin: httpx.AsyncClient, base: str) -> bool:
    r = (await admin.get(base + "/rollout", headers=auth("admin"))).json()["rollout"]
    return r["state"] == "promoted"  # type: ignore[no-any-return]


# -- the CLI (built on another branch): `configbus watch` follows a rollout to its end ------


def _cli_has_rollouts() -> bool:
    try:
        res = subprocess.run(
            configbus_cmd("rollout", "--help"), capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return res.returncode == 0


cli_has_rollouts = _cli_has_rollouts()


@pytest.mark.skipif(not cli_has_rollouts, reason="`configbus rollout` is not built yet")
async def test_configbus_watch_exits_1_on_abort_and_0_on_promote(fleet: Fleet) -> None:
    async def watch() -> int:
        args = configbus_cmd(
            "watch", "--admin-url", fleet.admins[0].url, "--token", TOKEN,
            "--namespace", fleet.ns, "--timeout", "20",
        )  # fmt: skip
        proc = await asyncio.create_subprocess_exec(*args)
        try:
            async with asyncio.timeout(30):
                return await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    await publish_stable(fleet)
    obs = Observer(fleet.replicas)
    async with obs.running():
        await obs.warm()
        await start_rollout(fleet, fleet.doc(provider_port=fleet.dead_port), 10, "broken")
        assert await watch() == 1
        await start_rollout(fleet, fleet.doc(), 1.0, "good")
        assert await watch() == 0
