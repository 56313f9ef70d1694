"""Reading an audit stream page by page, newest first, with an optional filter."""

from __future__ import annotations

from collections.abc import Callable

import redis.asyncio as aioredis

from configbus.records import AuditEntry, audit_entry, text_of
from configbus.redis_calls import guarded

AUDIT_SCAN_CHUNK = 250


async def scan_audit(
    redis: aioredis.Redis,
    key: str,
    *,
    count: int,
    before: str | None = None,
    match: Callable[[AuditEntry], bool] | None = None,
    scan_max: int = 10 * AUDIT_SCAN_CHUNK,
) -> tuple[list[AuditEntry], str | None]:
    """Up to `count` entries of the audit stream `key` that `match`, newest first, older than
    `before`; reads at most `scan_max` entries. Also returns where to resume: the last entry
    read when the stream goes on beyond what was read, else None."""
    if before is not None and not before.strip("0-"):
        return [], None  # nothing is older than 0-0 (and Redis refuses "(0-0")
    out: list[AuditEntry] = []
    hi, scanned = ("+" if before is None else f"({before}"), 0
    while len(out) < count and scanned < scan_max:
        chunk = count if match is None else min(AUDIT_SCAN_CHUNK, scan_max - scanned)
        rows = await guarded(redis.xrevrange(key, max=hi, min="-", count=chunk), "read audit")
        scanned += len(rows)
        for entry_id, raw in rows:
            entry = audit_entry(entry_id, raw)
            if match is None or match(entry):
                out.append(entry)
                if len(out) == count:
                    return out, entry.id
        if len(rows) < chunk:
            return out, None
        hi = f"({text_of(rows[-1][0])}"
    return out, hi[1:] if hi.startswith("(") else None
