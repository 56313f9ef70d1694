"""Text from strangers made safe to store and to print: control characters escaped, length cut.

A request path or a replica's reason can carry terminal escape sequences; printed raw they
forge rows in an operator's terminal. `printable` is applied where such text is stored (the
admin's audit) and again where it is shown (the CLI's tables).
"""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the format characters that reorder or hide text (bidi
# overrides and isolates, zero-width joiners): what a terminal acts on or hides; and lone
# surrogates, which no UTF-8 encoder takes.
_UNSAFE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff\ufeff]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, limit: int | None = None) -> str:
    """`text` with every control or bidi character escaped (`\\x1b`, `\\u202e`), cut to at
    most `limit` characters (ending in `…` when cut)."""
    out = _UNSAFE.sub(_escape, text)
    if limit is not None and len(out) > limit:
        out = out[: max(0, limit - 1)] + "…"
    return out
