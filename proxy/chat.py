"""`POST /v1/chat/completions`: auth, limits, routing, retries, fallbacks, streaming.

A request reads the applied snapshot ONCE and holds it (a refcount) until its answer is
complete, streams included, so a reload never mixes two configs in one request and never
closes a pool a request is still using.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from proxy import anthropic, errors
from proxy.errors import ProxyError
from proxy.routing import plan
from proxy.runtime import ClientRuntime, Runtime
from proxy.upstream import ProviderRuntime

log = logging.getLogger("proxy.chat")

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_NO_CONFIG = errors.unavailable("no configuration applied yet", "no_config")


def authenticate(rt: Runtime, request: Request) -> ClientRuntime:
    auth = request.headers.get("authorization")
    if not auth or not auth.startswith(("Bearer ", "bearer ")):
        raise errors.unauthorized("missing bearer API key")
    client = rt.clients.get(hashlib.sha256(auth[7:].strip().encode()).hexdigest())
    if client is None:
        raise errors.unauthorized()
    return client


async def read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise errors.bad_request("bad Content-Length") from None
        if n > limit:
            raise errors.too_large(limit)
        return await request.body()
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise errors.too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def parse_request(body: bytes) -> dict[str, Any]:
    try:
        req = _decode(body)
    except msgspec.DecodeError as exc:
        raise errors.bad_request(f"body is not valid JSON: {exc}") from None
    if not isinstance(req, dict):
        raise errors.bad_request("body must be a JSON object")
    if not isinstance(req.get("model"), str):
        raise errors.bad_request("'model' is required and must be a string", "missing_model")
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.bad_request("'messages' must be a non-empty list", "missing_messages")
    return req


class RelayResponse(StreamingResponse):
    """A streaming response that runs `on_close` once it is done, however it ends."""

    def __init__(self, content: AsyncIterator[bytes], *, headers: dict[str, str],
                 on_close: Callable[[], None]) -> None:
        super().__init__(content, 200, headers=headers, media_type="text/event-stream")
        self._on_close = on_close
        self._content = content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self._content.aclose()  # type: ignore[attr-defined]
            finally:
                self._on_close()


async def _relay(resp: aiohttp.ClientResponse, provider: ProviderRuntime) -> AsyncIterator[bytes]:
    translator = anthropic.StreamTranslator() if provider.type == "anthropic" else None
    try:
        async for chunk in resp.content.iter_any():
            if translator is None:
                yield chunk
            else:
                out = translator.feed(chunk)
                if out:
                    yield out
    except (TimeoutError, aiohttp.ClientError) as exc:
        # Too late to retry: the client already has part of the answer. Say so in-band.
        log.warning("stream from %s broke: %r", provider.name, exc)
        yield (b"data: " + errors.error_body(f"upstream {provider.name} stream broke",
                                             "upstream_error", "stream_interrupted")
               + b"\n\ndata: [DONE]\n\n")
    finally:
        resp.release()


class ChatHandler:
    """The endpoint; state comes from the app (watcher, limiter, metrics, settings)."""

    def __init__(self, *, current: Callable[[], Any], limiter: Any, metrics: Any,
                 max_body_bytes: int, retry_backoff_s: float) -> None:
        self._current = current
        self._limiter = limiter
        self._metrics = metrics
        self._limit = max_body_bytes
        self._backoff = retry_backoff_s

    async def __call__(self, request: Request) -> Response:
        applied = self._current()
        if applied is None:
            self._metrics.request("none", "none", 503)
            return _NO_CONFIG.response()
        rt: Runtime = applied.value
        rt.acquire()
        held = True
        model_label = "unknown"
        rl_headers: dict[str, str] | None = None
        try:
            client = authenticate(rt, request)
            req = parse_request(await read_body(request, self._limit))
            model: str = req["model"]
            if model not in rt.routes:
                raise errors.model_not_found(model)
            model_label = model
            if not client.may_use(model):
                raise errors.forbidden(model)
            if client.rpm is not None:
                verdict = await self._limiter.hit(client.name, client.rpm)
                rl_headers = verdict.headers()
                if not verdict.allowed:
                    raise errors.rate_limited(
                        f"rate limit of {client.rpm} requests per minute reached for "
                        f"client '{client.name}'", rl_headers)
            headers = {"x-configbus-version": str(applied.version)}
            if rl_headers:
                headers.update(rl_headers)
            response = await self._forward(rt, model, req, headers)
            if isinstance(response, RelayResponse):
                held = False  # the stream releases the snapshot when it ends
            return response
        except ProxyError as exc:
            self._metrics.request(model_label, "none", exc.status)
            if rl_headers and exc.status != 429:
                exc.headers = {**rl_headers, **(exc.headers or {})}
            return exc.response()
        finally:
            if held:
                rt.release()

    async def _forward(self, rt: Runtime, model: str, req: dict[str, Any],
                       headers: dict[str, str]) -> Response:
        stream = req.get("stream") is True
        metrics = self._metrics
        last: ProxyError | None = None
        limited = False
        for route, target in plan(rt.routes, model):
            p = target.provider
            if not p.rate_ok():
                limited = True
                continue
            if route.params:
                merged = {**route.params, **req, "model": target.model}
            else:
                merged = req
                merged["model"] = target.model
            payload = _encode(anthropic.to_anthropic(merged, target.model)
                              if p.type == "anthropic" else merged)
            for attempt in range(p.max_retries + 1):
                if attempt:
                    delay = min(self._backoff * (1 << (attempt - 1)), self._backoff * 8)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                if not p.breaker.allow():
                    last = last or errors.unavailable(f"provider {p.name}: circuit open",
                                                      "circuit_open")
                    metrics.attempt(p.name, "circuit_open")
                    break
                t0 = time.perf_counter()
                try:
                    resp = await p.post(payload, stream=stream)
                    status = resp.status
                    if stream and status == 200:
                        data = b""
                    else:
                        data = await resp.read()
                except TimeoutError:
                    p.breaker.failure()
                    metrics.attempt(p.name, "timeout")
                    last = errors.timeout(f"provider {p.name} timed out")
                    continue
                except aiohttp.ClientError as exc:
                    p.breaker.failure()
                    metrics.attempt(p.name, "error")
                    last = errors.bad_gateway(f"provider {p.name}: {type(exc).__name__}")
                    continue
                metrics.latency(p.name, time.perf_counter() - t0)
                if status >= 500 or status == 429:
                    if status == 429:
                        p.breaker.release()
                    else:
                        p.breaker.failure()
                    metrics.attempt(p.name, str(status))
                    last = errors.bad_gateway(f"provider {p.name} answered {status}")
                    continue
                p.breaker.success()
                metrics.attempt(p.name, "ok")
                metrics.request(model, p.name, status)
                headers["x-configbus-provider"] = p.name
                if stream and status == 200:
                    return RelayResponse(_relay(resp, p), headers=headers,
                                         on_close=rt.release)
                if p.type == "anthropic":
                    if status >= 400:
                        data = anthropic.error_to_openai(status, data)
                    else:
                        try:
                            data = _encode(anthropic.from_anthropic(_decode(data)))
                        except (msgspec.DecodeError, AttributeError, TypeError):
                            raise errors.bad_gateway(
                                f"provider {p.name} sent an unreadable answer") from None
                return Response(data, status, headers=headers, media_type="application/json")
        if last is None and limited:
            raise errors.rate_limited(f"every provider of model '{model}' is at its rate limit",
                                      {"retry-after": "1"})
        if last is None:
            raise errors.unavailable(f"model '{model}' has no enabled deployment",
                                     "no_deployment")
        raise last
