"""Differences between two documents: a unified diff for people, changed paths for programs."""

from __future__ import annotations

import difflib
import json
from typing import Any

from configbus.api import ChangedPath


def pretty(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def unified(a: Any, b: Any, *, from_name: str, to_name: str) -> str:
    return "".join(
        difflib.unified_diff(
            pretty(a).splitlines(keepends=True),
            pretty(b).splitlines(keepends=True),
            fromfile=from_name,
            tofile=to_name,
        )
    )


def changed_paths(a: Any, b: Any, path: str = "") -> list[ChangedPath]:
    """Leaf-most paths where `a` and `b` differ, in document order."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[ChangedPath] = []
        for key in sorted(a.keys() | b.keys()):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a:
                out.append(ChangedPath(sub, "added"))
            elif key not in b:
                out.append(ChangedPath(sub, "removed"))
            else:
                out += changed_paths(a[key], b[key], sub)
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        out = []
        for i in range(max(len(a), len(b))):
            sub = f"{path}[{i}]"
            if i >= len(a):
                out.append(ChangedPath(sub, "added"))
            elif i >= len(b):
                out.append(ChangedPath(sub, "removed"))
            else:
                out += changed_paths(a[i], b[i], sub)
        return out
    if a != b or type(a) is not type(b):
        return [ChangedPath(path, "changed")]
    return []
