"""The admin ASGI app: `create_app(settings)` builds it; shared objects live in the lifespan
state (`request.state.services`), never in module globals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypedDict

import msgspec
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from admin import key_routes, provider_routes, rollout_routes, routes, usage_routes
from admin.answers import JSON, ApiError
from admin.auth import TokenTable
from admin.breaker import CircuitBreaker
from admin.console import Console, SecurityHeaders, Sessions, console_routes
from admin.http import Services, services
from admin.metrics import AdminMetrics
from admin.openapi import spec
from admin.ratelimit import RateLimiter
from admin.rollouts import Driver
from admin.settings import AdminSettings
from configbus.api import Status
from configbus.connection import connect
from configbus.crypto import SecretBox
from configbus.errors import StoreError
from configbus.redis_calls import REDIS_ERRORS, store_error
from configbus.signing import RecordSigner
from configbus.tracing import tracer_provider


class State(TypedDict):
    services: Services


async def live(request: Request) -> Response:
    return JSON(Status(status="ok"))


async def ready(request: Request) -> Response:
    svc = services(request)
    try:
        await svc.guarded(lambda: _ping(svc))
    except StoreError:
        return ApiError(
            503,
            "store_unavailable",
            "Redis unavailable",
            headers={"Retry-After": svc.breaker.retry_after_header()},
        ).response()
    return JSON(Status(status="ready"))


async def _ping(svc: Services) -> None:
    try:
        await svc.redis.ping()
    except REDIS_ERRORS as exc:
        raise store_error(exc, "ping") from exc


async def metrics(request: Request) -> Response:
    return Response(
        generate_latest(services(request).metrics.registry), media_type=CONTENT_TYPE_LATEST
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return ApiError(
        exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {})
    ).response()


def create_app(settings: AdminSettings, *, tracing: TracerProvider | None = None) -> Starlette:
    """The admin service for `settings`; refuses to build without a token. Publishes are
    traced to `tracing` when given, else where the `OTEL_*` variables say (default: off)."""
    settings.check()
    box = SecretBox(settings.bus.secret_keys) if settings.bus.secret_keys else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[State]:
        redis = connect(
            settings.bus.redis_url,
            socket_timeout_s=settings.redis_timeout_s,
            connect_timeout_s=settings.redis_timeout_s,
            retries=0,
        )
        svc = Services(
            settings=settings,
            redis=redis,
            tokens=TokenTable(settings.tokens),
            breaker=CircuitBreaker(
                failures=settings.breaker_failures, reset_s=settings.breaker_reset_s
            ),
            limiter=RateLimiter(
                redis,
                limit=settings.publish_limit,
                window_s=settings.publish_window_s,
                timeout_s=settings.redis_timeout_s,
            ),
            box=box,
            metrics=AdminMetrics(),
            signer=None if box is None else RecordSigner(box.keys),
        )
        provider = tracing if tracing is not None else tracer_provider("configbus-admin")
        svc.tracer = None if provider is None else provider.get_tracer("configbus.admin")
        svc.sessions = Console(Sessions(redis, settings.tokens, svc.guarded))
        driver = Driver(
            redis,
            store_for=svc.store,
            tracer=svc.tracer,
            on_step=lambda ns, r, step: svc.metrics.rollouts.labels(
                {"advance": "advanced", "promote": "promoted", "abort": "aborted"}[step]
            ).inc(),
        )
        driving = asyncio.create_task(driver.run(), name="rollout-driver")
        try:
            yield {"services": svc}
        finally:
            driving.cancel()
            await asyncio.wait([driving], timeout=5)
            await svc.limiter.aclose()
            await redis.aclose()
            if provider is not None and tracing is None:
                provider.shutdown()

    spec_json = msgspec.json.encode(spec())

    async def openapi(request: Request) -> Response:
        return Response(spec_json, media_type="application/json")

    ns = "/v1/namespaces/{ns}"
    app_routes = [
        Route(f"{ns}/config", routes.get_config, methods=["GET"]),
        Route(f"{ns}/config", routes.put_config, methods=["PUT"]),
        Route(f"{ns}/config", routes.patch_config, methods=["PATCH"]),
        Route(f"{ns}/validate", routes.validate, methods=["POST"]),
        Route(f"{ns}/versions", routes.list_versions, methods=["GET"]),
        Route(f"{ns}/versions/{{n}}", routes.get_version, methods=["GET"]),
        Route(f"{ns}/diff", routes.diff, methods=["GET"]),
        Route(f"{ns}/rollback", routes.rollback, methods=["POST"]),
        Route(f"{ns}/rollouts", rollout_routes.start_rollout, methods=["POST"]),
        Route(f"{ns}/rollout", rollout_routes.get_rollout, methods=["GET"]),
        Route(f"{ns}/rollout/promote", rollout_routes.promote_rollout, methods=["POST"]),
        Route(f"{ns}/rollout/abort", rollout_routes.abort_rollout, methods=["POST"]),
        Route(f"{ns}/replicas", routes.replicas, methods=["GET"]),
        Route(f"{ns}/providers/{{name}}/models", provider_routes.provider_models, methods=["GET"]),
        Route(f"{ns}/providers/{{name}}/test", provider_routes.provider_test, methods=["POST"]),
        Route(f"{ns}/keys", key_routes.create_key, methods=["POST"]),
        Route(f"{ns}/keys", key_routes.list_keys, methods=["GET"]),
        Route(f"{ns}/keys/{{id}}", key_routes.get_key, methods=["GET"]),
        Route(f"{ns}/keys/{{id}}", key_routes.update_key, methods=["PATCH"]),
        Route(f"{ns}/keys/{{id}}", key_routes.revoke_key, methods=["DELETE"]),
        Route(f"{ns}/keys/{{id}}/rotate", key_routes.rotate_key, methods=["POST"]),
        Route(f"{ns}/audit", routes.audit, methods=["GET"]),
        Route(f"{ns}/export", routes.export, methods=["GET"]),
        Route(f"{ns}/import", routes.import_, methods=["POST"]),
        Route(f"{ns}/rotate-secrets", routes.rotate, methods=["POST"]),
        Route(f"{ns}/usage", usage_routes.usage, methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", ready, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *console_routes(),  # the web console at /ui, and its event stream
    ]
    return Starlette(
        routes=app_routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
        middleware=[Middleware(SecurityHeaders)],
    )
