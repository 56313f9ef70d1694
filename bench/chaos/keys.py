"""Client keys among the faults: created and revoked through the admins all along, probed on
every replica.

Two promises are judged:

- no key change is lost: every tenth step (and at the end) the collection is listed; every
  key the admins answered 201 for since Redis last came back empty (a wipe takes every
  change with it) is there unless it was revoked, and none answered revoked (200) is; at
  the end every replica holds the collection's final revision;
- no replica accepts a revoked key once it has ACKed the revision that revoked it: before
  each probe the prober reads the replica's /status (the revision it holds, and its
  lineage); a 200 for a key revoked at or below that revision, in that lineage, is a
  violation.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from time import monotonic as now
from typing import Any

import httpx

from bench.chaos.invariants import Ledger
from bench.chaos.processes import NAMESPACE, Fleet

PATH = f"/v1/namespaces/{NAMESPACE}/keys"
CHURN_GAP_S = 0.3
PROBE_GAP_S = 0.2
LIVE_KEYS = 8  # revoke the oldest once more than this many live
CHECK_EVERY = 10  # churn steps between listings of the collection


@dataclass
class Issued:
    id: str
    key: str
    created_at: float  # monotonic, when the admin answered
    revision: int
    revoked_rev: int | None = None
    revoked_at: float | None = None
    # A revoke whose answer was lost (503, a broken connection): it may have happened.
    uncertain: bool = False


@dataclass
class KeyLedger:
    issued: dict[str, Issued] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    probes: int = 0
    revoked_refused: int = 0
    violations: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: int = 0  # listings of the collection compared with what was answered
    checked_keys: int = 0
    lost: list[dict[str, Any]] = field(default_factory=list)
    resurrected: list[dict[str, Any]] = field(default_factory=list)

    def count(self, what: str) -> None:
        self.outcomes[what] = self.outcomes.get(what, 0) + 1


class KeyChurn:
    def __init__(self, fleet: Fleet, ledger: Ledger, rng: random.Random) -> None:
        self.fleet, self.ledger, self.rng = fleet, ledger, rng
        self.keys = KeyLedger()

    async def churn(self, stopping: asyncio.Event) -> None:
        n = 0
        while not stopping.is_set():
            n += 1
            admin = self.fleet.admin_http[n % len(self.fleet.admin_http)]
            live = [i for i in self.keys.issued.values() if i.revoked_rev is None]
            try:
                if len(live) > LIVE_KEYS:
                    await self._revoke(admin, live[0])
                else:
                    await self._create(admin, n)
                if n % CHECK_EVERY == 0:
                    await self.checkpoint(admin)
            except httpx.HTTPError as exc:
                self.keys.count(f"transport:{type(exc).__name__}")
            await asyncio.sleep(self.rng.uniform(0.5, 1.5) * CHURN_GAP_S)

    async def _create(self, admin: httpx.AsyncClient, n: int) -> None:
        resp = await admin.post(PATH, json={"name": f"chaos-{n}", "tags": ["chaos"]})
        self.keys.count(f"create:{resp.status_code}")
        if resp.status_code == 201:
            body = resp.json()
            e = body["entry"]
            self.keys.issued[e["id"]] = Issued(e["id"], body["key"], now(), e["revision"])

    async def _revoke(self, admin: httpx.AsyncClient, issued: Issued) -> None:
        try:
            resp = await admin.delete(f"{PATH}/{issued.id}")
        except httpx.HTTPError:
            issued.uncertain = True
            raise
        self.keys.count(f"revoke:{resp.status_code}")
        if resp.status_code >= 500:
            issued.uncertain = True
        if resp.status_code in (200, 404):
            issued.uncertain = False
        if resp.status_code == 200:
            issued.revoked_rev = int(resp.json()["revision"])
            issued.revoked_at = now()
        elif resp.status_code == 404:
            # Gone already: a revoke whose answer was lost, or Redis wiped since.
            issued.revoked_rev, issued.revoked_at = -1, now()

    async def _listing(self, admin: httpx.AsyncClient) -> set[str] | None:
        """Every chaos key's id in the collection now (None: Redis could not answer)."""
        present: set[str] = set()
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"count": 500, "tag": "chaos"}
            if cursor:
                params["cursor"] = cursor
            resp = await admin.get(PATH, params=params)
            if resp.status_code != 200:
                return None
            page = resp.json()
            present |= {e["id"] for e in page["keys"]}
            cursor = page["next_cursor"]
            if not cursor:
                return present

    async def checkpoint(self, admin: httpx.AsyncClient) -> None:
        """The collection against what the admins answered: every key created (201) since
        Redis last came back empty and not revoked is there; none revoked (200) is."""
        wipes = len(self.fleet.wiped_at)
        since = max(self.fleet.wiped_at, default=float("-inf"))
        started = now()
        present = await self._listing(admin)
        if present is None or len(self.fleet.wiped_at) != wipes:
            return  # Redis down, or wiped meanwhile: no verdict
        self.keys.checkpoints += 1
        for i in self.keys.issued.values():
            if i.created_at < since or i.created_at > started:
                continue
            if i.revoked_at is None:
                if i.uncertain:
                    continue  # perhaps revoked: no verdict either way
                self.keys.checked_keys += 1
                if i.id not in present:
                    self.keys.lost.append({"key_id": i.id, "t": self.ledger.t()})
            elif i.revoked_at < started:
                self.keys.checked_keys += 1
                if i.id in present:
                    self.keys.resurrected.append({"key_id": i.id, "t": self.ledger.t()})

    async def probe(self, stopping: asyncio.Event) -> None:
        """Revoked keys (and live ones) against each replica, its ACK read first."""
        async with httpx.AsyncClient(timeout=5) as http:
            while not stopping.is_set():
                await asyncio.sleep(PROBE_GAP_S)
                revoked = [i for i in self.keys.issued.values() if (i.revoked_rev or 0) > 0]
                if not revoked:
                    continue
                issued = self.rng.choice(revoked[-20:])
                for rep in self.fleet.replicas:
                    if rep.down:
                        continue
                    try:
                        st = (await http.get(rep.url + "/status")).json().get("keys") or {}
                        resp = await http.post(
                            rep.url + "/v1/chat/completions",
                            json={"model": "m", "messages": [{"role": "user", "content": "k"}]},
                            headers={"authorization": f"Bearer {issued.key}"},
                        )
                    except (httpx.HTTPError, ValueError):
                        continue
                    self.keys.probes += 1
                    held = int(st.get("rev") or 0)
                    assert issued.revoked_rev is not None
                    if resp.status_code == 401:
                        self.keys.revoked_refused += 1
                    elif resp.status_code == 200 and held >= issued.revoked_rev:
                        self.keys.violations.append(
                            {"what": "accepted_revoked_key_after_ack", "replica": rep.rid,
                             "key_id": issued.id, "revoked_rev": issued.revoked_rev,
                             "held_rev": held, "t": self.ledger.t()}
                        )  # fmt: skip

    async def final(self) -> dict[str, Any]:
        """A last checkpoint, and what the collection and the replicas hold at the end."""
        await self.checkpoint(self.fleet.admin_http[0])
        lost = sorted({x["key_id"] for x in self.keys.lost})
        resurrected = sorted({x["key_id"] for x in self.keys.resurrected})
        revs = {}
        async with httpx.AsyncClient(timeout=5) as http:
            for rep in self.fleet.replicas:
                st = (await http.get(rep.url + "/status")).json().get("keys") or {}
                revs[rep.rid] = st.get("rev")
        state = await self.fleet.r.mget([f"cb:{{{NAMESPACE}}}:ck:rev"])
        collection_rev = int(state[0] or 0)
        return {
            "ops": dict(sorted(self.keys.outcomes.items())),
            "issued": len(self.keys.issued),
            "revoked": sum(1 for i in self.keys.issued.values() if i.revoked_rev),
            "probes": self.keys.probes,
            "revoked_refused": self.keys.revoked_refused,
            "checkpoints": self.keys.checkpoints,
            "keys_checked": self.keys.checked_keys,
            "lost": lost,
            "resurrected": resurrected,
            "collection_rev": collection_rev,
            "replica_revs": revs,
            "violations": self.keys.violations[:20],
            "violation_count": len(self.keys.violations),
        }
