"""`POST /v1/chat/completions` (and `/v1/embeddings`): auth, limits, the response cache,
routing, retries, fallbacks, streaming.

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
from collections.abc import Callable
from typing import Any

import msgspec
from opentelemetry.trace import Tracer
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from configbus.logs import request_context
from configbus.watcher import Applied
from proxy import anthropic, azure, errors
from proxy.admission import (
    Ticket,
    admit,
    admit_request,
    ask_usage,
    asked_usage,
    rate_limited,
    tokens_of,
    usage_of,
)
from proxy.allowance import Allowance
from proxy.body import model_request
from proxy.cache import CACHE_HEADER, HIT, MISS, ModelCache, ResponseCache, bypass, replay
from proxy.cache import request_key as cache_key
from proxy.embeddings import parse_embeddings
from proxy.errors import ProxyError
from proxy.h1client import UpstreamError
from proxy.limits import FleetLimits
from proxy.metrics import ProxyMetrics
from proxy.observe import REQUEST_ID, TRACEPARENT, Exchange, new_request_id, request_id
from proxy.relay import Headers, RelayResponse, relay
from proxy.routing import plan
from proxy.runtime import ClientRuntime, Runtime
from proxy.tracing import RequestTrace
from proxy.traffic import TrafficCounter
from proxy.upstream import ProviderRuntime, Purpose
from proxy.usage import Meter

log = logging.getLogger("proxy.chat")

_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_NO_CONFIG = errors.unavailable("no configuration applied yet", "no_config")
CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
# The endpoints served by a ChatHandler (bare ASGI, before routing): path → state key.
HANDLERS = {CHAT_PATH: "chat", EMBEDDINGS_PATH: "embeddings"}


def client_for(rt: Runtime, auth: bytes | str | None) -> ClientRuntime:
    """The enabled client whose key hash matches the bearer key in `auth` (401 if none)."""
    if isinstance(auth, str):
        auth = auth.encode("latin-1")
    if not auth or auth[:7] not in (b"Bearer ", b"bearer "):
        raise errors.unauthorized("missing bearer API key")
    sha = hashlib.sha256(auth[7:].strip()).hexdigest()
    client = rt.clients.get(sha) or rt.key_client(sha)
    if client is None:
        raise errors.unauthorized()
    return client


def authenticate(rt: Runtime, request: Request) -> ClientRuntime:
    return client_for(rt, request.headers.get("authorization"))


async def read_body(receive: Receive, length: bytes | None, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes (before reading, when it can)."""
    if length is not None:
        try:
            n = int(length)
        except ValueError:
            raise errors.bad_request("bad Content-Length") from None
        if n > limit:
            raise errors.too_large(limit)
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts, size = [body], len(body)
    while msg.get("more_body"):
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise errors.bad_request("client went away")
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise errors.too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def parse_request(body: bytes) -> dict[str, Any]:
    req = model_request(body)
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise errors.bad_request("'messages' must be a non-empty list", "missing_messages")
    for field, items in (("messages", messages), ("tools", req.get("tools") or [])):
        if not isinstance(items, list):
            raise errors.bad_request(f"'{field}' must be a list")
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise errors.bad_request(f"{field}[{i}] must be an object")
    return req


_JSON = (b"content-type", b"application/json")
_SSE = (b"content-type", b"text/event-stream")
_PROVIDER = b"x-configbus-provider"


class ChatHandler:
    """The endpoint as a bare ASGI app: the hot path skips the framework's routing and
    middleware layers (the app dispatches to it first). State comes from the lifespan.
    One handler per `purpose`: chat completions, or embeddings (the same path otherwise)."""

    def __init__(
        self,
        *,
        current: Callable[[], Applied[Runtime] | None],
        limits: FleetLimits,
        metrics: ProxyMetrics,
        max_body_bytes: int,
        retry_backoff_s: float,
        traffic: TrafficCounter,
        tracer: Tracer | None = None,
        log_context: bool = False,
        purpose: Purpose = "chat",
        cache: ResponseCache | None = None,
        meter: Meter | None = None,
    ) -> None:
        self._purpose = purpose
        self._parse = parse_request if purpose == "chat" else parse_embeddings
        self._cache = cache
        self._current = current
        self._meter = meter  # usage and budgets; None: not counted
        self._log_context = log_context  # JSON logs: say which request a line is about
        self._tracer = tracer
        self._traffic = traffic
        self._limits = limits
        self._metrics = metrics
        self._limit = max_body_bytes
        self._backoff = retry_backoff_s

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The request, and a 500 in OpenAI's shape if the handler itself fails."""
        try:
            await self(scope, receive, send)
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            ex: Exchange | None = scope.get("configbus.exchange")
            if ex is None:
                ex = Exchange(new_request_id(), time.perf_counter())
            await _send_error(send, errors.internal(), ex.headers())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        applied = self._current()
        auth = length = forwarded = rid = parent = cache_control = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                auth = v
            elif k == b"content-length":
                length = v
            elif k == b"x-forwarded-for":
                forwarded = v
            elif k == REQUEST_ID:
                rid = v
            elif k == TRACEPARENT:
                parent = v
            elif k == b"cache-control":
                cache_control = v
        if applied is None:
            self._metrics.request("none", "none", 503)
            await _send_error(send, _NO_CONFIG, Exchange(request_id(rid), started).headers())
            return
        ex = Exchange(request_id(rid), started, str(applied.version).encode())
        tr = (
            None
            if self._tracer is None
            else RequestTrace(self._tracer, parent, applied.version, ex.request_id)
        )
        scope["configbus.exchange"] = ex  # for the unhandled-error answer
        if self._log_context:
            request_context.set(
                (
                    ex.request_id.decode("latin-1"),
                    str(applied.version),
                    "" if tr is None else tr.trace_id(),
                )
            )
        rt: Runtime = applied.value
        rt.acquire()
        held = True
        # What a rollout's guard counts: requests the config handled (routed upstream, or
        # failed by this replica: a 5xx it answered, an upstream refusing our credentials).
        # A client's own mistakes (4xx before routing) are neither.
        failed: bool | None = None
        model_label = "unknown"
        ticket: Ticket | None = None
        try:
            ip_limits = () if rt.ip is None else rt.ip.admit(scope.get("client"), forwarded)
            client = client_for(rt, auth)
            if self._meter is not None and self._meter.over:  # some key or team is over budget
                refused = self._meter.refusal(client, rt)
                if refused is not None:
                    self._metrics.budget_refused(str(refused.param))
                    raise refused
            body = await read_body(receive, length, self._limit)
            req = self._parse(body)
            model: str = req["model"]
            route = rt.routes.get(model)
            if route is None:
                raise errors.model_not_found(model)
            if route.purpose != self._purpose:
                raise errors.wrong_purpose(model, route.purpose)
            model_label = model
            if not client.may_use(model):
                raise errors.forbidden(model)
            if tr is not None:
                tr.identify(client.name, model)
            headers: Headers = [_JSON, (b"x-configbus-version", ex.version)]
            if rt.any_limits:
                ticket = admit_request(
                    self._limits, rt, client, model, req, len(body), ip_limits, headers
                )
                if tr is not None:
                    tr.limit("shadow" if ticket is not None and ticket.shadow else "admitted")
            failed = False  # routed: from here on, the config is judged by the outcome
            mc: ModelCache | None = route.cache
            key = None
            if mc is not None and self._cache is not None:
                skip_lookup, skip_store = bypass(cache_control)
                if not skip_store:
                    key = cache_key(mc, self._purpose, req)
                if not skip_lookup:
                    assert key is not None
                    hit = await self._from_cache(mc, key, req, headers, ticket, ex, tr, send)
                    if hit is not None:
                        if self._meter is not None:
                            self._meter.count_cache_hit(client, model, *hit)
                        return
                ex.cache = MISS
                headers.append((CACHE_HEADER, MISS))
                if tr is not None:
                    tr.cache("miss")
            result = await self._forward(rt, client, model, req, headers, ticket, ex, tr, parent)
            if isinstance(result, RelayResponse):
                if key is not None:
                    assert self._cache is not None and mc is not None
                    provider = next((v for k, v in reversed(headers) if k == _PROVIDER), b"")
                    self._cache.record(mc, key, provider, result.tap)
                self._traffic.record(applied.version, time.perf_counter() - started, False)
                held = False  # the stream releases the snapshot when it ends
                result.raw_headers += ex.headers(self._metrics.overhead.observe)
                await result(scope, receive, send)
                return
            failed = result[0] >= 500
            if key is not None and result[0] == 200:
                assert self._cache is not None and mc is not None
                provider = next((v for k, v in reversed(headers) if k == _PROVIDER), b"")
                self._cache.put(mc, key, provider, result[1])
            if ticket is not None and ticket.tokens:
                ok = result[0] < 400
                ticket.settle(usage_of(result[1]) if ok else None, ok)
            headers += ex.headers(self._metrics.overhead.observe)
            if tr is not None:
                tr.end(result[0])
            await send({"type": "http.response.start", "status": result[0], "headers": headers})
            await send({"type": "http.response.body", "body": result[1]})
        except ProxyError as exc:
            if exc.status >= 500 or failed is not None:
                failed = exc.status >= 500
            self._metrics.request(model_label, "none", exc.status)
            if ticket is not None:
                ticket.settle(None, False)
            if tr is not None:
                if exc.status == 429:
                    tr.limit("refused")
                tr.end(exc.status)
            extra = ex.headers()
            if ex.cache is not None:
                extra.append((CACHE_HEADER, ex.cache))
            await _send_error(send, exc, extra)
        finally:
            if held:
                if failed is not None:
                    self._traffic.record(applied.version, time.perf_counter() - started, failed)
                rt.release()

    async def _from_cache(
        self,
        mc: ModelCache,
        key: str,
        req: dict[str, Any],
        headers: Headers,
        ticket: Ticket | None,
        ex: Exchange,
        tr: RequestTrace | None,
        send: Send,
    ) -> tuple[int, int] | None:
        """Answer from the cache if it holds the answer, a stream replayed as one: the
        tokens the stored answer reports, or None (not in the cache: nothing was sent)."""
        assert self._cache is not None
        found = await self._cache.get(mc, key)
        if found is None:
            return None
        provider, body = found
        ex.cache = HIT
        tokens = tokens_of(body)
        if tr is not None:
            tr.cache("hit")
        self._metrics.request(mc.model, "cache", 200)
        if ticket is not None:
            ticket.settle(0, True)  # no upstream tokens were spent
        if req.get("stream") is True:
            opts = req.get("stream_options")
            body = replay(body, isinstance(opts, dict) and opts.get("include_usage") is True)
            headers[0] = _SSE
        headers.append((CACHE_HEADER, HIT))
        if provider:
            headers.append((_PROVIDER, provider))
        headers += ex.headers(self._metrics.overhead.observe)
        if tr is not None:
            tr.end(200)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return tokens

    async def _forward(
        self,
        rt: Runtime,
        client: ClientRuntime,
        model: str,
        req: dict[str, Any],
        headers: Headers,
        ticket: Ticket | None,
        ex: Exchange,
        tr: RequestTrace | None,
        parent: bytes | None,
    ) -> tuple[int, bytes] | RelayResponse:
        stream = req.get("stream") is True
        metrics = self._metrics
        meter = self._meter
        # Streams: the upstream is asked for usage when it is counted; a client that did
        # not ask for it itself does not get the usage-only chunk.
        client_asked = stream and asked_usage(req)
        last: ProxyError | None = None
        limited: ProviderRuntime | None = None
        refused: Allowance | None = None
        for route, target in plan(rt.routes, model):
            p = target.provider
            if p.limits and ticket is not None:
                shadowed = len(ticket.shadow)
                refused_here = admit(self._limits, p.limits, ticket, time.monotonic())
                if refused_here is not None:
                    limited, refused = p, refused_here
                    if tr is not None:
                        tr.limit("refused", p.name)
                    continue
                if len(ticket.shadow) > shadowed:
                    headers.append(ticket.shadow_header())
            if stream and (meter is not None or (ticket is not None and ticket.tokens)):
                ask_usage(req)
            if route.params:
                merged = {**route.params, **req, "model": target.model}
            else:
                merged = req
                merged["model"] = target.model
            if p.type == "anthropic":
                try:
                    payload = _encode(anthropic.to_anthropic(merged, target.model))
                except (
                    KeyError,
                    TypeError,
                    ValueError,
                    AttributeError,
                    msgspec.DecodeError,
                ) as exc:
                    # A shape OpenAI would take but the Messages API cannot express.
                    raise errors.bad_request(
                        f"request cannot be sent to an Anthropic upstream: {exc!r}"
                    ) from None
            else:
                payload = _encode(merged)
            # W3C trace context upstream: our attempt's span, else the client's as it came.
            up = None if parent is None else {"traceparent": parent.decode("latin-1")}
            for attempt in range(p.max_retries + 1):
                if attempt:
                    delay = min(self._backoff * (1 << (attempt - 1)), self._backoff * 8)
                    await asyncio.sleep(delay * (0.5 + random.random()))
                if tr is not None:
                    up = tr.attempt(p.name, target.model, attempt)
                if not p.breaker.allow():
                    last = last or errors.unavailable(
                        f"provider {p.name}: circuit open", "circuit_open"
                    )
                    metrics.attempt(p.name, "circuit_open")
                    if tr is not None:
                        tr.attempt_end("circuit_open")
                    break
                t0 = time.perf_counter()
                try:
                    resp = await p.post(payload, stream=stream, headers=up, url=target.url)
                    status = resp.status
                    data = b"" if stream and status == 200 else await resp.read()
                except TimeoutError:
                    p.breaker.failure()
                    metrics.attempt(p.name, "timeout")
                    if tr is not None:
                        tr.attempt_end("timeout")
                    last = errors.timeout(f"provider {p.name} timed out")
                    continue
                except UpstreamError as exc:
                    p.breaker.failure()
                    metrics.attempt(p.name, "error")
                    if tr is not None:
                        tr.attempt_end("error")
                    last = errors.bad_gateway(f"provider {p.name}: {type(exc).__name__}")
                    continue
                except BaseException:
                    p.breaker.release()  # cancelled: no verdict; free a half-open probe slot
                    raise
                finally:
                    ex.upstream_s += time.perf_counter() - t0
                metrics.latency(p.name, time.perf_counter() - t0)
                if status >= 500 or status in (401, 403, 429):
                    if status == 429:
                        p.breaker.release()
                    else:
                        p.breaker.failure()
                    metrics.attempt(p.name, str(status))
                    if tr is not None:
                        tr.attempt_end(str(status))
                    if status in (401, 403):
                        # The upstream refused the gateway's own key: not the client's
                        # fault, and its body may quote the key. Another deployment may do.
                        last = errors.bad_gateway(
                            f"provider {p.name} refused the gateway's credentials ({status})"
                        )
                    else:
                        last = errors.bad_gateway(f"provider {p.name} answered {status}")
                    continue
                p.breaker.success()
                metrics.attempt(p.name, "ok")
                metrics.request(model, p.name, status)
                headers.append((b"x-configbus-provider", p.name_bytes))
                if tr is not None:
                    tr.attempt_end("ok", p.name)
                if stream and status == 200:
                    on_close = rt.release if tr is None else traced_close(rt, tr, status)
                    tally = None if meter is None else meter.tally(rt, client, model, target)
                    return RelayResponse(
                        relay(resp, p, ticket, tally, strip=not client_asked and asked_usage(req)),
                        headers=headers,
                        on_close=on_close,
                        upstream=resp,
                    )
                if p.type == "anthropic":
                    if status >= 400:
                        data = anthropic.error_to_openai(status, data)
                    else:
                        try:
                            data = _encode(anthropic.from_anthropic(_decode(data)))
                        except (msgspec.DecodeError, AttributeError, TypeError):
                            raise errors.bad_gateway(
                                f"provider {p.name} sent an unreadable answer"
                            ) from None
                elif p.type == "azure" and status >= 400:
                    data = azure.error_to_openai(status, data)
                if meter is not None and status < 400:
                    meter.count(rt, client, model, target, *tokens_of(data))
                return status, data
        if last is None and limited is not None and refused is not None:
            raise rate_limited(refused, limited.limits, time.monotonic())
        if last is None:
            raise errors.unavailable(f"model '{model}' has no enabled deployment", "no_deployment")
        raise last


def traced_close(rt: Runtime, tr: RequestTrace, status: int) -> Callable[[], None]:
    def close() -> None:
        tr.end(status)
        rt.release()

    return close


async def _send_error(send: Send, exc: ProxyError, extra: Headers) -> None:
    headers = [_JSON, *extra]
    if exc.headers:
        headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": exc.body()})
