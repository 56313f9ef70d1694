"""Plain-text output shared by the client subcommands: tables and ages."""

from __future__ import annotations

import time

from configbus.escape import printable


def table(rows: list[list[str]]) -> str:
    """Rows as left-aligned columns, the first row the header; control characters in a cell
    are escaped (a stored value must not drive the operator's terminal or forge a row)."""
    rows = [[printable(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def ago(ts: float | None, now: float | None = None) -> str:
    """How long ago `ts` (a Unix time) was: `12s ago`, `5m ago`, `3h ago`; `-` for none."""
    if not ts:
        return "-"
    s = max(0.0, (time.time() if now is None else now) - ts)
    return (
        f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.0f}h ago"
    )
