"""Preflight: before a rollout's first stage (or on `validate?probe=true`), ask each provider
whose settings changed whether it answers with the stored key (its model list, through
`admin/probe.py`), and refuse with the provider's answer when it does not. A cheap check
that catches a wrong URL or a revoked key before any replica serves traffic with it.
"""

from __future__ import annotations

import asyncio

import httpx

from admin.probe import DEFAULT_TIMEOUT_S, ask, client
from configbus.crypto import SecretBox
from configbus.document import Document, Provider
from configbus.errors import Issue


def changed_providers(new: Document, old: Document | None) -> list[tuple[int, Provider]]:
    """Enabled providers of `new` that `old` does not have exactly."""
    before = {p.name: p for p in old.providers} if old else {}
    return [(i, p) for i, p in enumerate(new.providers) if p.enabled and before.get(p.name) != p]


async def probe(
    http: httpx.AsyncClient, i: int, p: Provider, box: SecretBox | None, label: str = "preflight"
) -> Issue | None:
    where = f"providers[{i}]"
    test, _ = await ask(http, p, box, where)
    if test.ok:
        return None
    if test.error and test.error.startswith(f"{where}.api_key"):
        return Issue(f"{where}.api_key", f"{label}: {test.error}")
    if test.status is None:
        return Issue(where, f"{label}: provider {p.name!r} at {test.url}: {test.error}")
    return Issue(where, f"{label}: provider {p.name!r} answered {test.status}: {test.error}")


async def preflight(
    new: Document,
    old: Document | None,
    box: SecretBox | None,
    *,
    label: str = "preflight",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Issue]:
    """One issue per changed provider that does not answer its model list."""
    changed = changed_providers(new, old)
    if not changed:
        return []
    async with client(timeout_s, transport) as http:
        found = await asyncio.gather(*(probe(http, i, p, box, label) for i, p in changed))
    return [issue for issue in found if issue is not None]
