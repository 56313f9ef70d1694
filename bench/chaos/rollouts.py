"""Rollouts among the faults: a new version for the canary stage (`tier=canary`, replica-1)
first, judged by the admins' guard on the soak's own load. A good one must be promoted after
its bake; a broken one (its primary provider on a dead port, no fallback) must be aborted by
the guard, the canary back on head. Either way no replica outside the stage may run the
version before it is promoted (judged in the report from every status poll and answer).
"""

from __future__ import annotations

import asyncio
import contextlib
from time import monotonic as now
from typing import Any

import httpx

from bench.chaos.documents import broken_document
from bench.chaos.invariants import CONVERGE_TIMEOUT_S, Ledger, Staged, Watch
from bench.chaos.processes import CANARY, CANARY_LABELS, NAMESPACE, Fleet
from bench.chaos.publisher import Publisher

BAKE_S = 1.0
END_TIMEOUT_S = 10.0  # the guard needs ~20 requests on the canary, then decides in a tick
ROLLOUTS = f"/v1/namespaces/{NAMESPACE}/rollouts"
ROLLOUT = f"/v1/namespaces/{NAMESPACE}/rollout"


RETRY_503_S = 10.0


async def rollout(
    fleet: Fleet, ledger: Ledger, publisher: Publisher, watch: Watch, *, broken: bool, admin: int
) -> dict[str, Any]:
    """One rollout to its end through admin `admin`; what it saw, `ok` when it ended as it
    should and every replica is back on head."""
    http = fleet.admin_http[admin]
    out: dict[str, Any] = {"broken": broken, "admin": admin + 1}
    async with publisher.lock:
        # Everyone on head first: the baseline runs it, the canary comes back to it.
        await watch.converged(now(), CONVERGE_TIMEOUT_S)
        _, base = await fleet.head()
        p = publisher.next()
        body = p.body
        if broken:
            body = broken_document(p.n, fleet.mock_a.url, fleet.mock_b.url, fleet.dead_port)
            ledger.trial.add(CANARY)
        try:
            # A 503 (the admin's breaker still open after an earlier Redis fault) is answered
            # fast and retried with the same idempotency key, as any client would.
            deadline = now() + RETRY_503_S
            while True:
                resp = await http.post(
                    ROLLOUTS,
                    json={
                        "document": body,
                        "message": p.key,
                        "stages": [{"selector": CANARY_LABELS, "bake_s": BAKE_S}],
                    },
                    headers={"If-Match": f'"{base}"', "Idempotency-Key": p.key},
                )
                if resp.status_code != 503 or now() > deadline:
                    break
                ledger.publish_outcomes["rollout 503 (retried)"] += 1
                await asyncio.sleep(0.1)
            ledger.publish_outcomes[f"rollout {resp.status_code}"] += 1
            if resp.status_code != 201:
                return {**out, "status": resp.status_code, "body": resp.text[:300], "ok": False}
            started = now()
            ev = (resp.json()["epoch"], int(resp.json()["version"]))
            ledger.created[ev] = p.key
            ledger.created_at[ev] = started
            staged = ledger.rollouts[ev] = Staged(stage={CANARY})
            out["version"] = ev[1]
            ended = await _ended(http)
            if ended is not None:
                staged.state, staged.ended_at = ended["state"], ended["ended_at"]
                out.update(state=ended["state"], reason=ended["reason"])
                out["ended_after_s"] = round(now() - started, 3)
            if staged.state == "promoted":
                publisher.base = ev[1]
            back = await watch.converged(now(), CONVERGE_TIMEOUT_S)
        finally:
            ledger.trial.discard(CANARY)
    canary_on = next(
        (at for rid, v, at in ledger.moves if rid == CANARY and v == ev and at is not None), None
    )
    if canary_on is not None and staged.ended_at is not None:
        out["ended_after_canary_apply_s"] = round(staged.ended_at - canary_on, 3)
    if broken:
        # The fix: a plain publish on top, so the aborted version is superseded.
        out["fix_version"] = (await publisher.publish_now())[1]
    out["back_on_head_s"] = await watch.converge(now())
    out["stage_back_on_head_s"] = back
    expected = "aborted" if broken else "promoted"
    out["ok"] = staged.state == expected and out["back_on_head_s"] is not None
    return out


async def _ended(http: httpx.AsyncClient) -> dict[str, Any] | None:
    """The rollout once it ended, polled through the admin; None if it did not in time."""
    deadline = now() + END_TIMEOUT_S
    while now() < deadline:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            r = (await http.get(ROLLOUT)).json()["rollout"]
            if r["state"] != "running":
                return r  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    return None
