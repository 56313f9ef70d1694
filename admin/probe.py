"""Asking a provider whether it answers: its model list, with the stored key.

One home for the request the admin sends a provider (the model-list URL, the key header of
its dialect, its extra headers) and for reading the answer: the rollout preflight, the
`validate?probe=true` check, the provider test and model discovery all go through `ask`.

The key sent is the document's secret (decrypted with the admin's keys). A provider whose
key is an environment variable (`api_key_env`) is asked without one: only the replicas hold
that variable. The provider's answer is cut short and the key is blotted out of it:
upstreams are known to quote a rejected key in their error body.
"""

from __future__ import annotations

import time
from typing import Any, Literal
from urllib.parse import quote

import httpx
import msgspec

from configbus.api import ProviderTest
from configbus.crypto import SecretBox
from configbus.document import Provider
from configbus.errors import SecretError

DEFAULT_TIMEOUT_S = 5.0
ANSWER_CHARS = 200
ANTHROPIC_VERSION = "2023-06-01"
KeySource = Literal["secret", "env", "none"]


def provider_key(p: Provider, box: SecretBox | None, where: str) -> str | None:
    """The plaintext key the admin can send for `p`, if any; SecretError when undecryptable."""
    if p.api_key is None:
        return None
    if p.api_key.secret is not None:
        return p.api_key.secret
    if p.api_key.encrypted is not None and box is not None:
        return box.decrypt(p.api_key.encrypted, where)
    return None


def models_request(p: Provider, key: str | None) -> tuple[str, dict[str, str]]:
    """The URL and headers of `p`'s model list, in its dialect."""
    base = p.base_url.rstrip("/")
    if p.type == "anthropic" and not base.endswith("/v1"):  # as the replicas build its URL
        base += "/v1"
    if p.type == "azure":  # the resource's models (a deployment's name is the operator's)
        url = f"{base}/openai/models?api-version={quote(p.api_version or '', safe='')}"
    else:
        url = base + "/models"
    headers = dict(p.headers)
    if key is not None:
        if p.type == "azure":
            headers["api-key"] = key
        elif p.type == "anthropic":
            headers.update({"x-api-key": key, "anthropic-version": ANTHROPIC_VERSION})
        else:
            headers["Authorization"] = f"Bearer {key}"
    return url, headers


def blot(text: str, key: str | None) -> str:
    """`text` cut short, with the key replaced by `***`."""
    if key:
        text = text.replace(key, "***")
    return text[:ANSWER_CHARS]


def _key_source(p: Provider) -> KeySource:
    if p.api_key is not None:
        return "secret"
    if p.api_key_env is not None:
        return "env"
    return "none"


def client(timeout_s: float = DEFAULT_TIMEOUT_S, transport: Any = None) -> httpx.AsyncClient:
    """The HTTP client probes share (no redirects: a key is never sent on elsewhere)."""
    return httpx.AsyncClient(timeout=timeout_s, follow_redirects=False, transport=transport)


async def ask(
    http: httpx.AsyncClient, p: Provider, box: SecretBox | None, where: str
) -> tuple[ProviderTest, Any]:
    """Ask `p` for its model list: the test's outcome, and the decoded answer when it
    succeeded (None otherwise)."""
    url, _ = models_request(p, None)
    source = _key_source(p)
    started = time.perf_counter()

    def result(ok: bool, status: int | None, error: str | None) -> ProviderTest:
        return ProviderTest(
            provider=p.name,
            url=url,
            ok=ok,
            status=status,
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            key=source,
            error=error,
        )

    try:
        key = provider_key(p, box, f"{where}.api_key")
    except SecretError as exc:
        return result(False, None, f"{where}.api_key: {exc}"), None
    url, headers = models_request(p, key)
    try:
        r = await http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return result(False, None, type(exc).__name__), None
    if r.status_code >= 400:
        return result(False, r.status_code, blot(r.text, key)), None
    try:
        body = msgspec.json.decode(r.content)
    except msgspec.DecodeError:
        return result(False, r.status_code, "the answer is not JSON"), None
    return result(True, r.status_code, None), body


def model_ids(body: Any) -> list[str] | None:
    """The model ids of a model-list answer (OpenAI's and Anthropic's: `data[].id`)."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        return None
    return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
