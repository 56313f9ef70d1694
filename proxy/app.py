"""The replica app: `create_app(settings)` builds a Starlette app (uvicorn factory mode).

Shared objects (the watcher, the rate limiter, metrics) live in the lifespan's typed state,
not in module globals. The watcher follows the bus and swaps in a `Runtime` snapshot per
version; request handlers read one snapshot reference per request.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import msgspec
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from configbus import ResponseStore
from configbus.connection import connect, connect_read
from configbus.crypto import SecretBox
from configbus.document import Document
from configbus.keyset import KeyFollower, key_snapshot_path
from configbus.keystore import KeyStore
from configbus.llm import document_decoder
from configbus.settings import BusSettings
from configbus.signing import RecordSigner
from configbus.store import Store
from configbus.tracing import tracer_provider
from configbus.usage import UsageWriter
from configbus.watcher import Applied, Watcher
from proxy import errors
from proxy.cache import ResponseCache
from proxy.chat import CHAT_PATH, EMBEDDINGS_PATH, HANDLERS, ChatHandler, authenticate
from proxy.errors import ProxyError
from proxy.gc_policy import freeze_startup_heap
from proxy.limits import FleetLimits
from proxy.metrics import ProxyMetrics
from proxy.runtime import Builder, Runtime
from proxy.settings import ProxySettings
from proxy.traffic import TrafficCounter
from proxy.usage import Meter

log = logging.getLogger("proxy")
_encode = msgspec.json.Encoder().encode

# Lease calls (in the background) give up on a slow Redis quickly: limits go local.
LIMITER_SOCKET_TIMEOUT_S = 0.25
LIMITER_CONNECT_TIMEOUT_S = 0.25
# A response cache lookup is on the request's path: a slow Redis is a miss, soon.
CACHE_TIMEOUT_S = 0.1
# A usage flush carries a second of the replica's traffic: give it longer.
USAGE_TIMEOUT_S = 1.0


class State(TypedDict):
    settings: ProxySettings
    watcher: Watcher[Document, Runtime]
    limits: FleetLimits
    metrics: ProxyMetrics
    registry: CollectorRegistry
    chat: ChatHandler
    embeddings: ChatHandler
    meter: Meter | None


# The document's `logging.level` governs every logger of the replica: its own, the
# library's and the server's. uvicorn gives its child loggers levels of their own (from
# `--log-level`), so naming the parent is not enough.
REPLICA_LOGGERS = (
    "configbus",
    "proxy",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "uvicorn.asgi",
)


def set_log_level(level: str) -> None:
    for name in REPLICA_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _on_swap(new: Applied[Runtime], old: Applied[Runtime] | None) -> None:
    set_log_level(new.value.log_level)
    if old is not None and old.value is not new.value:
        old.value.retire()


class _ChatEndpoint:
    """A chat handler as routed by Starlette (when the shortcut below does not apply)."""

    def __init__(self, name: str) -> None:
        self._name = name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler: ChatHandler = scope["state"][self._name]
        await handler(scope, receive, send)


class ProxyApp(Starlette):
    """Starlette, with the one hot endpoint dispatched before routing and middleware."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = HANDLERS.get(scope["path"]) if scope["type"] == "http" else None
        if name is not None and scope["method"] == "POST" and "state" in scope:
            handler: ChatHandler = scope["state"][name]
            await handler.serve(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def _keys_status(keys: KeyFollower | None) -> dict[str, Any] | None:
    if keys is None:
        return None
    t = keys.table
    return {"epoch": t.epoch, "rev": t.rev, "count": len(t), "stale": keys.stale}


def create_app(
    settings: ProxySettings | BusSettings, *, tracing: TracerProvider | None = None
) -> Starlette:
    """A proxy replica for `settings` (a ProxySettings, or just the bus settings).

    Traces go to `tracing` when given, else where the `OTEL_*` variables say (off unless
    `OTEL_TRACES_EXPORTER` names an exporter)."""
    ps = settings if isinstance(settings, ProxySettings) else ProxySettings(bus=settings)
    bus = ps.bus

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        registry = CollectorRegistry()
        metrics = ProxyMetrics(registry)
        provider = tracing if tracing is not None else tracer_provider("configbus-proxy")
        tracer = None if provider is None else provider.get_tracer("configbus.proxy")
        traffic = TrafficCounter()
        redis = connect(bus.redis_url)
        read_redis = connect_read(bus.redis_read_url, bus.replica_id, bus.redis_url)
        limiter_redis = connect(
            bus.redis_url,
            socket_timeout_s=LIMITER_SOCKET_TIMEOUT_S,
            connect_timeout_s=LIMITER_CONNECT_TIMEOUT_S,
            retries=0,
        )
        limits = FleetLimits(
            limiter_redis, bus.namespace, bus.replica_id, timeout_s=LIMITER_SOCKET_TIMEOUT_S
        )
        limits.on_refusal = metrics.refused
        cache_redis = connect(
            bus.redis_url,
            socket_timeout_s=CACHE_TIMEOUT_S,
            connect_timeout_s=CACHE_TIMEOUT_S,
            retries=0,
        )
        cache = ResponseCache(ResponseStore(cache_redis, bus.namespace), registry)
        keys = KeyFollower(
            KeyStore(redis, bus.namespace),
            reconcile_interval_s=bus.reconcile_interval_s,
            snapshot_path=key_snapshot_path(bus.snapshot_path),
        )
        builder = Builder(on_breaker=metrics.breaker, limits=limits, keys=keys)
        box = SecretBox(bus.secret_keys) if bus.secret_keys else None
        meter = None
        if ps.usage:
            meter = Meter(
                UsageWriter(limiter_redis, bus.namespace, timeout_s=USAGE_TIMEOUT_S),
                flush_s=ps.usage_flush_s,
                metrics=metrics,
            )
        watcher: Watcher[Document, Runtime] = Watcher(
            Store(redis, bus.namespace),
            decode=document_decoder(box),
            # What the admin signed it validated: a replica checks types, not references.
            signer=RecordSigner(box.keys) if box is not None else None,
            decode_signed=document_decoder(box, semantic=False),
            build=builder.build,
            settings=bus,
            registry=registry,
            traffic=traffic.snapshot,
            labels=bus.labels,
            reads=Store(read_redis, bus.namespace) if read_redis is not None else None,
            tracer=tracer,
            keys=keys,
        )
        watcher.add_listener(_on_swap)
        handler_settings: dict[str, Any] = {
            "current": lambda: watcher.current,
            "limits": limits,
            "metrics": metrics,
            "max_body_bytes": ps.max_body_bytes,
            "retry_backoff_s": ps.retry_backoff_s,
            "traffic": traffic,
            "tracer": tracer,
            "log_context": ps.log_format == "json",
            "cache": cache,
            "meter": meter,
        }
        chat = ChatHandler(**handler_settings)
        embeddings = ChatHandler(**handler_settings, purpose="embeddings")
        await limits.start()
        if meter is not None:
            await meter.start()
        await watcher.start()
        if ps.gc_freeze:
            freeze_startup_heap()
        try:
            yield State(
                settings=ps,
                watcher=watcher,
                limits=limits,
                metrics=metrics,
                registry=registry,
                chat=chat,
                embeddings=embeddings,
                meter=meter,
            )
        finally:
            await watcher.stop()
            cur = watcher.current
            if cur is not None:
                cur.value.retire()
                # Requests still running after uvicorn's graceful period lose their pools.
                for p in list(cur.value.providers.values()):
                    p.close()
            await cache.aclose()
            await cache_redis.aclose()
            await limits.aclose()
            if meter is not None:
                await meter.aclose()  # a last flush of what was counted
            await limiter_redis.aclose()
            await redis.aclose()
            if read_redis is not None:
                await read_redis.aclose()
            if provider is not None and tracing is None:
                provider.shutdown()  # flushes what is batched

    async def models(request: Request) -> Response:
        applied = request.state.watcher.current
        if applied is None:
            return errors.unavailable("no configuration applied yet", "no_config").response()
        try:
            client = authenticate(applied.value, request)
        except ProxyError as exc:
            return exc.response()
        return Response(applied.value.models_body(client), media_type="application/json")

    async def live(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def ready(request: Request) -> Response:
        applied = request.state.watcher.current
        if applied is None:
            return Response(
                b'{"status":"not ready","reason":"no configuration applied"}',
                503,
                media_type="application/json",
            )
        return Response(
            _encode({"status": "ready", "version": applied.version, "stale": applied.stale}),
            media_type="application/json",
        )

    async def status(request: Request) -> Response:
        watcher: Watcher[Document, Runtime] = request.state.watcher
        applied = watcher.current
        limits: FleetLimits = request.state.limits
        body: dict[str, Any] = {
            "replica_id": watcher.replica_id,
            "labels": watcher.labels,
            "namespace": bus.namespace,
            "version": applied.version if applied else None,
            "epoch": applied.epoch if applied else None,
            "sha256": applied.sha256 if applied else None,
            "stale": applied.stale if applied else None,
            "applied_at": applied.applied_at if applied else None,
            "now": time.time(),
            "keys": _keys_status(watcher.keys),
            "rate_limits_local": limits.local,
            "rate_limits": limits.status(),
            "usage": None if request.state.meter is None else request.state.meter.status(),
            "log_level": logging.getLevelName(logging.getLogger("proxy").getEffectiveLevel()),
        }
        if applied is not None:
            body["providers"] = {
                name: {"breaker": p.breaker.state.name.lower(), "owners": p.owners}
                for name, p in applied.value.providers.items()
            }
        return Response(_encode(body), media_type="application/json")

    async def metrics(request: Request) -> Response:
        st = request.state
        st.metrics.limits_state(st.limits)
        st.metrics.keys_state(st.watcher.keys)
        if st.meter is not None:
            st.metrics.usage_state(st.meter)
        return Response(generate_latest(st.registry), media_type=CONTENT_TYPE_LATEST)

    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path, exc_info=exc)
        return errors.internal().response()

    return ProxyApp(
        routes=[
            Route(CHAT_PATH, _ChatEndpoint("chat"), methods=["POST"]),
            Route(EMBEDDINGS_PATH, _ChatEndpoint("embeddings"), methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/health/live", live, methods=["GET"]),
            Route("/health/ready", ready, methods=["GET"]),
            Route("/status", status, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
        exception_handlers={Exception: internal_error},
    )
