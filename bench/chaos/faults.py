"""The faults, one method each, and the schedule that cycles through them.

Each fault returns what it saw, with `back_on_head_s` (seconds until every live replica ran
head again) and `ok`; the schedule adds when it ran and how long it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import signal
import sys
from time import monotonic as now
from typing import Any

import httpx

from bench.chaos import network
from bench.chaos.inject import inject
from bench.chaos.invariants import BACK_ON_HEAD_S, CONVERGE_TIMEOUT_S, Ledger, Watch
from bench.chaos.processes import NAMESPACE, Fleet
from bench.chaos.publisher import Publisher
from bench.chaos.read_replica import read_replica_kill
from bench.chaos.rollouts import rollout
from configbus.testing import SAMPLE_CLIENT_KEY

PAUSE_S = 3.0  # past the replicas' 2 s socket timeout and the admin's 1 s
DOWN_S = 1.5
FAULTS = (
    "redis_kill_with_data",
    "pubsub_kill",
    "invalid_document",
    "net_latency",
    "upstream_fail",
    "redis_pause",
    "two_admins",
    "netns_link_down",
    "rollout_aborted",
    "corrupt_record",
    "replica_restart",
    "redis_restart_empty",
    "net_loss",
    "read_replica_kill",
    "clients_kill",
    "net_cut",
    "rollout_promoted",
)


class Faults:
    def __init__(
        self,
        fleet: Fleet,
        ledger: Ledger,
        publisher: Publisher,
        watch: Watch,
        rng: random.Random,
        *,
        hold_s: float = 2.0,
    ) -> None:
        self.fleet, self.ledger, self.publisher, self.watch = fleet, ledger, publisher, watch
        self.rng = rng
        self.hold_s = hold_s  # how long a network fault lasts

    def _count(self, kind: str) -> int:
        return sum(1 for f in self.ledger.faults if f["kind"] == kind)

    async def loop(self, end: float) -> None:
        """Faults one after another until 12 s before `end`, 1-2 s apart."""
        i = 0
        while now() < end - 12:
            kind = FAULTS[i % len(FAULTS)]
            i += 1
            started = now()
            try:
                result = await getattr(self, kind)()
            except Exception as exc:  # a fault step that broke is a finding, not a crash
                result = {"error": f"{type(exc).__name__}: {exc}"[:500], "ok": False}
                if self.fleet.redis.paused:
                    self.fleet.redis.resume()
                if not self.fleet.redis.running():
                    await self.fleet.start_redis()
            took = result.get("back_on_head_s")
            result.setdefault("ok", took is not None and took <= BACK_ON_HEAD_S)
            if kind != "upstream_fail":
                result["sre_view_s"] = self.watch.sre_view_s
                if self.watch.sre_view_s is None:
                    result["ok"] = False
            if kind != "upstream_fail" and took is not None and took > BACK_ON_HEAD_S:
                result["ok"] = False
            self.ledger.faults.append(
                {"kind": kind, "at_s": round(started - self.ledger.t0, 2),
                 "duration_s": round(now() - started, 2), **result}
            )  # fmt: skip
            print(json.dumps(self.ledger.faults[-1]), file=sys.stderr, flush=True)
            await asyncio.sleep(self.rng.uniform(1.0, 2.0))

    # -- Redis ---------------------------------------------------------------------------

    async def redis_kill_with_data(self) -> dict[str, Any]:
        await self.fleet.kill_redis()
        await asyncio.sleep(DOWN_S)  # the fault's duration, while load and publishes go on
        await self.fleet.start_redis()
        return {"back_on_head_s": await self.watch.converge(now())}

    async def redis_restart_empty(self) -> dict[str, Any]:
        epoch, _ = await self.fleet.head()
        await self.fleet.kill_redis()
        await asyncio.sleep(DOWN_S)
        await self.fleet.start_redis(wipe=True)
        back = now()
        if epoch:
            self.ledger.wiped_epochs.add(epoch)
        # Nothing is head in the new lineage: replicas keep serving (checked by the pollers:
        # no "no_config", no backwards move) until the next publish, which they must follow.
        ev = await self.publisher.publish_now()
        published = now()
        took = await self.watch.converge(published)
        return {
            "old_epoch": epoch,
            "new_epoch": ev[0],
            "first_version": ev[1],
            "redis_back_to_first_publish_s": round(published - back, 3),
            "back_on_head_s": took,
        }

    async def read_replica_kill(self) -> dict[str, Any]:
        return await read_replica_kill(self)

    async def redis_pause(self) -> dict[str, Any]:
        self.fleet.redis.pause()
        await asyncio.sleep(PAUSE_S)
        self.fleet.redis.resume()
        return {"paused_s": PAUSE_S, "back_on_head_s": await self.watch.converge(now())}

    async def pubsub_kill(self) -> dict[str, Any]:
        killed = await self.fleet.r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        ev = await self.publisher.publish_now()
        return {
            "connections_killed": int(killed),
            "version": ev[1],
            "back_on_head_s": await self.watch.converge(now()),
        }

    async def clients_kill(self) -> dict[str, Any]:
        """Every normal connection dropped by the server (replicas' reads and rate limiter,
        the admins' pools), as a Redis failover or a proxy in between would do."""
        async with self.publisher.lock:
            killed = await self.fleet.r.execute_command(
                "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"
            )
        ev = await self.publisher.publish_now()
        return {
            "connections_killed": int(killed),
            "version": ev[1],
            "back_on_head_s": await self.watch.converge(now()),
        }

    # -- the network between replicas and Redis (see bench.chaos.network) ------------------

    async def net_latency(self) -> dict[str, Any]:
        return await network.net_latency(self, self.hold_s)

    async def net_loss(self) -> dict[str, Any]:
        return await network.net_loss(self, self.hold_s)

    async def net_cut(self) -> dict[str, Any]:
        return await network.net_cut(self)

    async def netns_link_down(self) -> dict[str, Any]:
        return await network.netns_link_down(self, max(network.NETNS_DOWN_S, self.hold_s))

    # -- bad documents -------------------------------------------------------------------

    async def _bad_head(self, kind: str) -> dict[str, Any]:
        admin = self.fleet.admin_http[0]
        replicas_path = f"/v1/namespaces/{NAMESPACE}/replicas"
        async with self.publisher.lock:
            # Everyone on head first: that is what they must keep serving.
            await self.watch.converged(now(), CONVERGE_TIMEOUT_S)
            head = await self.fleet.head()
            before = {r.rid: head for r in self.fleet.replicas}
            epoch, version = await inject(self.fleet, kind)
            self.ledger.injected[(epoch, version)] = kind
            self.publisher.base = version
            injected_at = now()
            # Every replica must NACK it (reason in the store's replica status) and keep
            # serving what it had.
            nacked: dict[str, float] = {}
            deadline = now() + 5
            async with httpx.AsyncClient(timeout=1.0) as http:
                while len(nacked) < len(self.fleet.replicas) and now() < deadline:
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        rows = (await admin.get(replicas_path)).json()["replicas"]
                        for row in rows:
                            if row["rejected_version"] == version and row["epoch"] == epoch:
                                nacked.setdefault(row["replica_id"], round(now() - injected_at, 3))
                    await asyncio.sleep(0.05)
                still = {}
                for r in self.fleet.replicas:
                    with contextlib.suppress(httpx.HTTPError, ValueError):
                        st = (await http.get(r.url + "/status")).json()
                        still[r.rid] = (st["epoch"], st["version"]) == before[r.rid]
            reasons = []
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                rows = (await admin.get(replicas_path)).json()["replicas"]
                reasons = sorted({str(row["reason"])[:120] for row in rows if row["reason"]})
        # The fix, through the admin, on top of the bad head.
        ev = await self.publisher.publish_now()
        took = await self.watch.converge(now())
        ok = len(nacked) == len(self.fleet.replicas) and all(still.values())
        return {
            "injected_version": version,
            "nack_s": nacked,
            "kept_serving_old": still,
            "reasons": reasons,
            "fix_version": ev[1],
            "back_on_head_s": took,
            "ok": ok and took is not None,
        }

    async def invalid_document(self) -> dict[str, Any]:
        return await self._bad_head("invalid")

    async def corrupt_record(self) -> dict[str, Any]:
        kind = "checksum" if self._count("corrupt_record") % 2 == 0 else "unreadable"
        out = await self._bad_head(kind)
        out["corruption"] = kind
        return out

    # -- admins, upstreams, replicas -----------------------------------------------------

    async def two_admins(self) -> dict[str, Any]:
        pub = self.publisher
        async with pub.lock:
            _, base = await self.fleet.head()
            ps = [pub.next(), pub.next()]
            for p in ps:
                p.if_match = base
            resps = await asyncio.gather(pub.put(0, ps[0]), pub.put(1, ps[1]))
            settled = [pub.record(p, r) for p, r in zip(ps, resps, strict=True)]
        codes = sorted(r.status_code for r in resps)
        winner = next((ev for ev in settled if ev is not None), None)
        loser = next((r for r in resps if r.status_code == 409), None)
        current = loser.json()["error"].get("current_version") if loser is not None else None
        ok = codes == [201, 409] and winner is not None and current == winner[1]
        took = await self.watch.converge(now())
        return {
            "base": base,
            "statuses": codes,
            "winner": winner[1] if winner else None,
            "loser_told_current": current,
            "back_on_head_s": took,
            "ok": ok and took is not None,
        }

    async def rollout_aborted(self) -> dict[str, Any]:
        return await self._rollout(broken=True)

    async def rollout_promoted(self) -> dict[str, Any]:
        return await self._rollout(broken=False)

    async def _rollout(self, *, broken: bool) -> dict[str, Any]:
        admin = self._count("rollout_aborted") + self._count("rollout_promoted")
        return await rollout(
            self.fleet, self.ledger, self.publisher, self.watch, broken=broken, admin=admin % 2
        )

    async def upstream_fail(self) -> dict[str, Any]:
        before = self.ledger.fallback_answers
        failed_before = sum(self.ledger.failed.values())
        mock_a = self.fleet.mock_a.url
        async with httpx.AsyncClient(timeout=2) as http:
            await http.post(mock_a + "/_control", json={"fail_rate": 1.0, "status": 500})
            try:
                await asyncio.sleep(3.0)
                breakers = {}
                for r in self.fleet.replicas:
                    with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                        st = (await http.get(r.url + "/status")).json()
                        breakers[r.rid] = st["providers"]["upstream-a"]["breaker"]
            finally:
                await http.post(mock_a + "/_control", json={"fail_rate": 0.0})
        fallback = self.ledger.fallback_answers - before
        failed = sum(self.ledger.failed.values()) - failed_before
        return {
            "fallback_answers": fallback,
            "failed_meanwhile": failed,
            "primary_breakers": breakers,
            "ok": fallback > 0 and failed == 0,
        }

    async def replica_restart(self) -> dict[str, Any]:
        rep = self.fleet.replicas[self._count("replica_restart") % len(self.fleet.replicas)]
        await self.fleet.kill_redis()
        await self.fleet.read_replica.stop()  # every Redis the replica could read is gone
        rep.down = True
        deadline = now() + 15
        while rep.in_flight and now() < deadline:  # noqa: ASYNC110 - a bounded poll
            await asyncio.sleep(0.01)
        # What it runs now, with Redis gone, is what its last-known-good file must give back.
        expected = rep.last
        async with httpx.AsyncClient(timeout=2) as http:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                st = (await http.get(rep.url + "/status")).json()
                expected = (st["epoch"], int(st["version"]))
        t_stop = now()
        code = await rep.service.stop(signal.SIGTERM)
        stopped_s = round(now() - t_stop, 3)
        if rep.http is not None:
            await rep.http.aclose()
        rep.service.start()
        out: dict[str, Any] = {"replica": rep.rid, "exit_code": code, "stop_s": stopped_s}
        try:
            await rep.service.wait_http("/health/ready", timeout_s=30)
            async with httpx.AsyncClient(timeout=5) as http:
                st = (await http.get(rep.url + "/status")).json()
                chat = await http.post(
                    rep.url + "/v1/chat/completions",
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
                self.ledger.observe(rep, st)
        except (TimeoutError, RuntimeError, httpx.HTTPError) as exc:
            out.update(ready_while_redis_down=False, error=str(exc)[:500], ok=False)
        rep.http = self.fleet.client()
        rep.down = False
        await self.fleet.start_redis()
        await self.fleet.read_replica.start()
        out["back_on_head_s"] = await self.watch.converge(now())
        if out["back_on_head_s"] is None:
            out["ok"] = False
        return out
