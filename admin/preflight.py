"""Preflight: before a rollout's first stage, ask each provider whose settings changed
whether it answers with the stored key (its model list), and refuse the rollout with the
provider's answer when it does not. A cheap check that catches a wrong URL or a revoked
key before any replica serves traffic with it.

The provider's answer is cut short and the key is blotted out of it: upstreams are known to
quote a rejected key in their error body.
"""

from __future__ import annotations

import asyncio

import httpx

from configbus.crypto import SecretBox
from configbus.document import Document, Provider
from configbus.errors import Issue, SecretError

DEFAULT_TIMEOUT_S = 5.0
ANSWER_CHARS = 200


def changed_providers(new: Document, old: Document | None) -> list[tuple[int, Provider]]:
    """Enabled providers of `new` that `old` does not have exactly."""
    before = {p.name: p for p in old.providers} if old else {}
    return [(i, p) for i, p in enumerate(new.providers) if p.enabled and before.get(p.name) != p]


def _key(p: Provider, box: SecretBox | None, where: str) -> str | None:
    if p.api_key is None:
        return None
    if p.api_key.secret is not None:
        return p.api_key.secret
    if p.api_key.encrypted is not None and box is not None:
        return box.decrypt(p.api_key.encrypted, where)
    return None


def _request(p: Provider, key: str | None) -> tuple[str, dict[str, str]]:
    url = p.base_url.rstrip("/") + "/models"
    headers = dict(p.headers)
    if key is not None:
        if p.type == "anthropic":
            headers.update({"x-api-key": key, "anthropic-version": "2023-06-01"})
        else:
            headers["Authorization"] = f"Bearer {key}"
    return url, headers


async def probe(
    client: httpx.AsyncClient, i: int, p: Provider, box: SecretBox | None
) -> Issue | None:
    where = f"providers[{i}]"
    try:
        key = _key(p, box, f"{where}.api_key")
    except SecretError as exc:
        return Issue(f"{where}.api_key", f"preflight: {exc}")
    url, headers = _request(p, key)
    try:
        r = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return Issue(where, f"preflight: provider {p.name!r} at {url}: {type(exc).__name__}")
    if r.status_code < 400:
        return None
    answer = r.text[:ANSWER_CHARS]
    if key:
        answer = answer.replace(key, "***")
    return Issue(where, f"preflight: provider {p.name!r} answered {r.status_code}: {answer}")


async def preflight(
    new: Document,
    old: Document | None,
    box: SecretBox | None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Issue]:
    """One issue per changed provider that does not answer its model list."""
    changed = changed_providers(new, old)
    if not changed:
        return []
    async with httpx.AsyncClient(
        timeout=timeout_s, follow_redirects=False, transport=transport
    ) as client:
        found = await asyncio.gather(*(probe(client, i, p, box) for i, p in changed))
    return [issue for issue in found if issue is not None]
