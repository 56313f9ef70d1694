"""JSON merge patch (RFC 7396), with one rule for secrets.

A secret is an object with exactly one of `secret` / `encrypted` / `masked`. Merging
`{"secret": "new"}` into `{"masked": "sha256:…"}` the RFC way would give an object with two
forms; here a patch object that names any secret form replaces the stored secret whole.
"""

from __future__ import annotations

from typing import Any

SECRET_FORMS = frozenset({"secret", "encrypted", "masked"})


def _is_secret(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and set(value) <= SECRET_FORMS


def merge_patch(target: Any, patch: Any) -> Any:
    """Return `target` with `patch` applied; neither argument is modified."""
    if not isinstance(patch, dict):
        return patch
    if _is_secret(target) and any(patch.get(k) is not None for k in SECRET_FORMS):
        return {k: v for k, v in patch.items() if v is not None}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
