"""The publisher: new versions through the admins, as a careful client would send them.

Each publish carries If-Match (the version it builds on) and an Idempotency-Key; a 409
moves the base to the current version, a 503 or a transport error is retried with the same
key. Every answer is booked in the ledger, so the report can tell lost and doubled
publishes apart from superseded ones.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from time import monotonic as now
from typing import Any

import httpx

from bench.chaos.documents import document
from bench.chaos.invariants import Ledger, Version
from bench.chaos.processes import NAMESPACE, Fleet


@dataclass
class Pending:
    key: str
    n: int
    body: dict[str, Any]
    if_match: int


class Publisher:
    """`lock` is held by one admin write (or one fault step) at a time."""

    def __init__(self, fleet: Fleet, ledger: Ledger, rng: random.Random, run_id: str) -> None:
        self.fleet, self.ledger, self.rng, self.run_id = fleet, ledger, rng, run_id
        self.lock = asyncio.Lock()
        self.n = 0
        self.base = 0  # the publisher's idea of head
        self.pending: Pending | None = None

    def next(self) -> Pending:
        self.n += 1
        body = document(self.n, self.fleet.mock_a.url, self.fleet.mock_b.url)
        return Pending(f"chaos-{self.run_id}-{self.n}", self.n, body, self.base)

    async def put(self, admin: int, p: Pending) -> httpx.Response:
        return await self.fleet.admin_http[admin].put(
            f"/v1/namespaces/{NAMESPACE}/config",
            json={"document": p.body, "message": p.key},
            headers={"If-Match": f'"{p.if_match}"', "Idempotency-Key": p.key},
        )

    def record(self, p: Pending, resp: httpx.Response) -> Version | None:
        """Book one admin answer; returns (epoch, version) when the publish is settled."""
        ledger = self.ledger
        try:
            body = resp.json()
        except ValueError:
            body = {}
        ledger.publish_outcomes[f"{resp.status_code} {body.get('outcome') or body.get('error', {}).get('code', '')}"] += 1  # fmt: skip
        if resp.status_code in (200, 201):
            ev = (body["epoch"], int(body["version"]))
            if body["outcome"] == "noop":
                ledger.violations.append({"what": "noop_publish", "key": p.key, "version": ev[1]})
            prev = ledger.created.get(ev)
            if prev is not None and prev != p.key:
                ledger.doubled.append({"version": ev[1], "keys": [prev, p.key]})
            if resp.status_code == 201 and prev == p.key:
                ledger.doubled.append({"version": ev[1], "keys": [p.key], "why": "two 201s"})
            ledger.created[ev] = p.key
            ledger.created_at.setdefault(ev, now())
            self.base = ev[1]
            return ev
        if resp.status_code == 409:
            current = body.get("error", {}).get("current_version")
            if isinstance(current, int):
                self.base = current
                p.if_match = current
        return None

    async def step(self, admin: int = 0) -> Version | None:
        """One attempt of the pending publish (a new one when none is pending)."""
        if self.pending is None:
            self.pending = self.next()
        p = self.pending
        async with self.lock:
            started = now()
            try:
                resp = await self.put(admin, p)
            except httpx.HTTPError as exc:
                self.ledger.publish_outcomes[f"transport {type(exc).__name__}"] += 1
                return None
            if resp.status_code == 503:  # Redis down: the promise is a fast answer
                self.ledger.slowest_503_s = max(self.ledger.slowest_503_s, now() - started)
        settled = self.record(p, resp)
        if settled is not None:
            self.pending = None
        elif resp.status_code not in (409, 429) and resp.status_code < 500:
            self.ledger.violations.append(
                {"what": "publish_refused", "key": p.key, "status": resp.status_code,
                 "body": resp.text[:300]}
            )  # fmt: skip
            self.pending = None
        return settled

    async def publish_now(self, admin: int = 0, timeout_s: float = 15.0) -> Version:
        """Publish one new version (retrying 409 / 503) and return it; the lock is taken per
        attempt, so call it without holding the lock."""
        deadline = now() + timeout_s
        self.pending = self.pending or self.next()
        while True:
            ev = await self.step(admin)
            if ev is not None:
                return ev
            if now() > deadline:
                raise TimeoutError("publish did not go through")
            await asyncio.sleep(0.05)

    async def loop(self, stopping: asyncio.Event) -> None:
        """Publish every 0.2-0.6 s, through the two admins in turn."""
        turn = 0
        while not stopping.is_set():
            await self.step(admin=turn % 2)
            if self.pending is None:
                turn += 1
            await asyncio.sleep(self.rng.uniform(0.2, 0.6))

    async def settle(self, timeout_s: float = 15.0) -> None:
        """Let the last pending publish go through (the quiet end of the run)."""
        deadline = now() + timeout_s
        while self.pending is not None and now() < deadline:
            await self.step()
            await asyncio.sleep(0.1)
