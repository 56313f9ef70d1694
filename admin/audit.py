"""Where the admin's audit entries go, bounded, and how they are read back.

    cb:{ns}:audit       the namespace's history: every action of an authenticated and
                        authorised token that changes or checks something (the publish and
                        import scripts write their own). Nobody without a token adds to it,
                        so a flood cannot trim it.
    cb:{!admin}:denied  one stream for all namespaces (`!` is not in any namespace name):
                        requests refused before their handler ran (401, 403, 429). Sampled:
                        a burst, then a few per second per admin process, each entry counting
                        the refusals skipped before it (`unrecorded`); capped at about
                        DENIED_MAXLEN entries. A 401 to a made-up namespace creates no key.

Every refusal is counted in `configbus_admin_denied_total`. Successful reads are not
audited: `configbus watch` polls twice a second and would push real history out of the
capped stream; they are counted in `configbus_admin_requests_total`. `export` (every
version at once) is the one read that is audited. Every stored field is cut (a path to
PATH_MAX characters, others to FIELD_MAX) and its control characters escaped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from configbus.api import AuditPage, AuditQuery
from configbus.auditlog import scan_audit
from configbus.errors import StoreError
from configbus.escape import printable
from configbus.records import AuditEntry
from configbus.redis_calls import guarded

if TYPE_CHECKING:
    from admin.auth import Permission
    from admin.http import Services
    from configbus.store import Store

log = logging.getLogger("admin")

DENIED_KEY = "cb:{!admin}:denied"
DENIED_MAXLEN = 1000
DENIED_BURST, DENIED_PER_S = 20, 2.0
DENIED_OUTCOMES = frozenset({"unauthorized", "forbidden", "rate_limited"})
AUDITED_READS = frozenset({"export"})
PATH_MAX, FIELD_MAX = 200, 500


@dataclass
class Sampler:
    """A token bucket: `take()` says whether to write this refusal, and how many it skipped."""

    burst: int = DENIED_BURST
    per_s: float = DENIED_PER_S
    tokens: float = float(DENIED_BURST)
    stamp: float = field(default_factory=time.monotonic)
    skipped: int = 0

    def take(self) -> int | None:
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.per_s)
        self.stamp = now
        if self.tokens < 1:
            self.skipped += 1
            return None
        self.tokens -= 1
        skipped, self.skipped = self.skipped, 0
        return skipped


def _clean(fields: dict[str, Any]) -> dict[str, str]:
    return {
        printable(k, 64): printable(
            "" if v is None else str(v), PATH_MAX if k == "path" else FIELD_MAX
        )
        for k, v in fields.items()
    }


@dataclass
class Auditor:
    """One admin process's audit writer (the sampler is per process)."""

    sampler: Sampler = field(default_factory=Sampler)
    denied_maxlen: int = DENIED_MAXLEN

    async def record(
        self,
        svc: Services,
        namespace: str,
        permission: Permission | None,  # None: not an API call (a console login)
        action: str,
        actor: str,
        outcome: str,
        **fields: Any,
    ) -> None:
        """Audit one answered request (unless its script already did)."""
        if outcome in DENIED_OUTCOMES:
            svc.metrics.denied.labels(action, outcome).inc()
            skipped = self.sampler.take()
            if skipped is None:
                svc.metrics.audit_unrecorded.inc()
                return
            entry = {"ts": f"{time.time():.6f}", "action": action, "actor": actor,
                     "outcome": outcome, "namespace": namespace, **fields}  # fmt: skip
            if skipped:
                entry["unrecorded"] = skipped
            await self._write(svc, lambda: self._xadd(svc, _clean(entry)), entry)
            return
        if permission == "read" and action not in AUDITED_READS:
            return
        store = svc.store(namespace)
        clean = _clean(fields)
        await self._write(
            svc,
            lambda: store.audit(printable(action), printable(actor), printable(outcome), **clean),
            {"action": action, "actor": actor, "outcome": outcome, **fields},
        )

    async def _xadd(self, svc: Services, entry: dict[str, str]) -> str:
        res = await guarded(
            svc.redis.xadd(DENIED_KEY, entry, maxlen=self.denied_maxlen, approximate=True),  # type: ignore[arg-type]
            "audit",
        )
        return str(res)

    async def _write(self, svc: Services, fn: Any, entry: dict[str, Any]) -> None:
        try:
            await svc.guarded(fn)
        except StoreError as exc:
            svc.metrics.audit_failures.inc()
            log.warning(
                "audit entry not written (%s): action=%s actor=%s outcome=%s status=%s",
                exc,
                entry.get("action"),
                entry.get("actor"),
                entry.get("outcome"),
                entry.get("status"),
            )


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def read(store: Store, q: AuditQuery) -> AuditPage:
    """A page of `store`'s namespace audit, newest first: its own history and the refusals
    that named it, filtered by actor, action and outcome."""
    ns = store.namespace

    def wanted(e: AuditEntry) -> bool:
        return (
            (q.actor is None or e.actor == q.actor)
            and (q.action is None or e.action == q.action)
            and (q.outcome is None or e.outcome == q.outcome)
        )

    filtered = q.actor is not None or q.action is not None or q.outcome is not None
    redis = store.redis
    own, own_next = await scan_audit(
        redis, store.keys.audit, count=q.count, before=q.before, match=wanted if filtered else None
    )
    if q.outcome is not None and q.outcome not in DENIED_OUTCOMES:
        denied: list[AuditEntry] = []
        denied_next = None
    else:
        denied, denied_next = await scan_audit(
            redis,
            DENIED_KEY,
            count=q.count,
            before=q.before,
            match=lambda e: e.fields.get("namespace") == ns and wanted(e),
        )
    entries = sorted([*own, *denied], key=lambda e: _id(e.id), reverse=True)[: q.count]
    if len(entries) == q.count:
        nxt: str | None = entries[-1].id
    else:
        resumes = [r for r in (own_next, denied_next) if r is not None]
        nxt = max(resumes, key=_id) if resumes else None
    return AuditPage(entries=entries, next_before=nxt)
