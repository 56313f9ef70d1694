"""One upstream provider at run time: its HTTP pool, breaker, rate limits, URL and headers.

A `ProviderRuntime` outlives config versions while its settings stay the same: the next
runtime snapshot carries over the object (pool, breaker state, limiter state). Each
snapshot that holds it is an owner; when the last owner is drained (its last in-flight
request finished) the pool closes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Literal
from urllib.parse import quote

from configbus import FRAMING_HEADERS
from configbus.breaker import Breaker, BreakerState
from configbus.document import CircuitBreaker, Provider, RateLimit
from proxy.allowance import Allowance
from proxy.h1client import Origin, Pool, Response, header_block, request_target

log = logging.getLogger("proxy.upstream")

Purpose = Literal["chat", "embeddings"]
_PATHS: dict[str, str] = {"chat": "/chat/completions", "embeddings": "/embeddings"}


class ProviderRuntime:
    def __init__(
        self,
        provider: Provider,
        breaker: CircuitBreaker,
        rate_limit: RateLimit | None,
        *,
        limits: tuple[Allowance, ...] = (),
        on_breaker: Callable[[str, BreakerState], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self.name_bytes = provider.name.encode()
        self.type = provider.type
        # Fleet-wide allowances (requests, tokens) of its rate limit: kept in the replica's
        # FleetLimits, so a new config version with the same limit keeps their state.
        self.limits = limits
        self.max_retries = provider.max_retries
        api_key = provider.api_key.secret if provider.api_key is not None else None
        if api_key is None and provider.api_key_env:
            api_key = (os.environ if env is None else env).get(provider.api_key_env)
        # What decides whether the next config version may keep this object.
        self.identity = (provider, breaker, rate_limit, api_key)
        base = self._base = provider.base_url.rstrip("/")
        headers = {"content-type": "application/json"}
        if provider.type == "anthropic":
            self.url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
            headers["anthropic-version"] = "2023-06-01"
            if api_key:
                headers["x-api-key"] = api_key
        elif provider.type == "azure":
            # Azure puts the deployment in the path (`url_for`); this is the default only.
            self.url = self.url_for("chat", "")
            if api_key:
                headers["api-key"] = api_key
        else:
            self.url = base + "/chat/completions"
            if api_key:
                headers["authorization"] = f"Bearer {api_key}"
        headers.update({k.lower(): v for k, v in provider.headers.items()})
        self.headers = headers
        # The request head's fixed lines, built once: a control character in a header (an
        # env key with a newline) refuses this version instead of every request. `host`
        # names a virtual host; other framing headers are the client's own.
        self._head = header_block(
            {k: v for k, v in headers.items() if k != "host" and k not in FRAMING_HEADERS}
        )
        self._origin = Origin(base, headers.get("host"))
        self._targets: dict[str, bytes] = {}
        self.timeout_s = provider.timeout_s
        self._on_breaker = on_breaker
        self.breaker = Breaker(breaker, on_change=self._breaker_changed)
        self.owners = 0
        self._pool: Pool | None = None
        self.closed = False

    def url_for(self, purpose: Purpose, model: str) -> str:
        """Where a deployment of `model` (the upstream's name for it) is asked for `purpose`.
        Azure: `{resource}/openai/deployments/{deployment}/{path}?api-version=...`."""
        if self.type == "azure":
            version = quote(self.provider.api_version or "", safe="")
            return (
                f"{self._base}/openai/deployments/{quote(model, safe='')}"
                f"{_PATHS[purpose]}?api-version={version}"
            )
        if purpose == "chat":
            return self.url
        return self._base + _PATHS[purpose]

    def _breaker_changed(self, state: BreakerState) -> None:
        log.warning("provider %s: circuit %s", self.name, state.name.lower().replace("_", "-"))
        if self._on_breaker is not None:
            self._on_breaker(self.name, state)

    def same_settings(self, other: ProviderRuntime) -> bool:
        return self.identity == other.identity

    @property
    def pool(self) -> Pool:
        p = self._pool
        if p is None:
            if self.closed:
                raise RuntimeError(f"provider {self.name}: pool already closed")
            settings = self.provider.pool
            p = self._pool = Pool(
                self._origin,
                max_connections=settings.max_connections,
                keepalive_s=settings.keepalive_timeout_s,
                connect_timeout_s=self.provider.connect_timeout_s,
            )
        return p

    async def post(
        self,
        body: bytes,
        *,
        stream: bool,
        headers: dict[str, str] | None = None,
        url: str | None = None,
    ) -> Response:
        """`headers`: per request, on top of the provider's (a W3C traceparent); `url`: the
        deployment's (`url_for`), else the provider's chat URL. Non-stream: the answer is
        whole when this returns; a stream: its head, `Response.chunks()` for the rest.
        Raises UpstreamError or TimeoutError."""
        url = url or self.url
        target = self._targets.get(url)
        if target is None:
            target = self._targets[url] = request_target(url)
        head = self._head if not headers else self._head + header_block(headers)
        return await self.pool.request(target, head, body, timeout=self.timeout_s, stream=stream)

    def own(self) -> None:
        self.owners += 1

    def disown(self) -> None:
        self.owners -= 1
        if self.owners <= 0 and not self.closed:
            self.close()

    def close(self) -> None:
        """Close the pool now, whoever still owns it (the last owner gone, or shutdown)."""
        self.closed = True
        p, self._pool = self._pool, None
        if p is not None:
            log.info("closing pool of provider %s", self.name)
            p.close()

    def __repr__(self) -> str:
        return f"ProviderRuntime({self.name!r}, {self.type}, owners={self.owners})"
