"""The plumbing every endpoint shares: services, errors as JSON, auth, audit, the breaker.

`endpoint(action, permission)` wraps a handler so that, in order: the namespace is checked,
the bearer token is authenticated (401) and authorised (403), write actions pass the publish
rate limit (429), the handler runs with every Redis call behind the circuit breaker (503
when open), domain errors become JSON error bodies, and the answer is audited as
`admin/audit.py` decides (refusals sampled into one capped stream, reads not at all), unless
the publish script already wrote the entry.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec
import redis.asyncio as aioredis
from opentelemetry.trace import Tracer
from starlette.requests import Request
from starlette.responses import Response

from admin.answers import ApiError, error_from
from admin.audit import Auditor
from admin.auth import Permission, TokenTable, allows
from admin.breaker import CircuitBreaker
from admin.metrics import AdminMetrics
from admin.ratelimit import RateLimiter
from admin.settings import AdminSettings, Token
from configbus.api import (
    IDEMPOTENCY_KEY_PATTERN,
    IDEMPOTENCY_KEY_RULE,
    IF_MATCH_PATTERN,
    MAX_VERSION_DIGITS,
    non_null,
)
from configbus.breaker import BreakerState
from configbus.codec import MAX_DEPTH, parse, sha256_hex
from configbus.crypto import SecretBox
from configbus.errors import (
    IdempotencyMismatch,
    InvalidDocument,
    RolloutRunning,
    StoreUnavailable,
    VersionConflict,
)
from configbus.names import NAMESPACE_RULE, is_namespace
from configbus.signing import RecordSigner
from configbus.store import Store
from configbus.validation import issue_from_msgspec

log = logging.getLogger("admin")
T = TypeVar("T")
Q = TypeVar("Q", bound=msgspec.Struct)

MAX_STORES = 256
_if_match = re.compile(IF_MATCH_PATTERN)
_idempotency_key = re.compile(IDEMPOTENCY_KEY_PATTERN)


class Authenticator(Protocol):
    """A second way in besides the bearer token (the console's session cookie)."""

    async def authenticate(self, request: Request) -> tuple[Token | None, Exception | None]: ...


@dataclass
class Services:
    """What the lifespan builds once and every request shares."""

    settings: AdminSettings
    redis: aioredis.Redis
    tokens: TokenTable
    breaker: CircuitBreaker
    limiter: RateLimiter
    box: SecretBox | None
    metrics: AdminMetrics
    stores: dict[str, Store] = field(default_factory=dict)
    auditor: Auditor = field(default_factory=Auditor)
    sessions: Authenticator | None = None  # set by the console: cookie sessions, same roles
    tracer: Tracer | None = None  # OpenTelemetry, when OTEL_TRACES_EXPORTER names an exporter

    # Signs what this admin validated (None without secret keys): `configbus.signing`.
    signer: RecordSigner | None = None

    def sign(self, body: bytes) -> str:
        """The signature of a body this admin validated ("" without secret keys): replicas
        that verify it skip their own semantic checks."""
        return "" if self.signer is None else self.signer.sign(sha256_hex(body))

    def store(self, namespace: str) -> Store:
        store = self.stores.get(namespace)
        if store is None:
            if len(self.stores) >= MAX_STORES:
                self.stores.pop(next(iter(self.stores)))
            store = self.stores[namespace] = Store(
                self.redis,
                namespace,
                retention=self.settings.history_retention,
                inline_max_bytes=self.settings.hint_max_bytes,
                min_replicas_to_ack=self.settings.min_replicas_to_ack,
                ack_timeout_ms=round(self.settings.replica_ack_timeout_s * 1000),
            )
        return store

    async def guarded(self, fn: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self.breaker.call(fn)
        finally:
            self.metrics.breaker_open.set(0 if self.breaker.state is BreakerState.CLOSED else 1)


def is_uint(text: str) -> bool:
    """ASCII digits only (str.isdigit also accepts '²', which int() refuses)."""
    return text.isascii() and text.isdigit()


def services(request: Request) -> Services:
    svc: Services = request.state.services
    return svc


@dataclass
class Ctx:
    """One request as a handler sees it."""

    request: Request
    svc: Services
    namespace: str
    store: Store
    token: Token
    action: str
    audited: bool = False  # the publish script wrote this action's audit entry
    audit_fields: dict[str, Any] = field(default_factory=dict)
    raw_body: bytes = b""

    def request_fingerprint(self) -> str:
        """A digest of what the caller asked (action, query, If-Match, body): an idempotent
        retry is the same request even when the version it would produce differs."""
        h = hashlib.sha256()
        for part in (self.action, self.request.url.query, self.request.headers.get("if-match", "")):
            h.update(part.encode() + b"\n")
        h.update(self.raw_body)
        return h.hexdigest()

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await self.svc.guarded(fn)

    async def body(self, limit: int | None = None) -> bytes:
        limit = limit or self.svc.settings.max_body_bytes
        too_big = ApiError(413, "body_too_large", f"request body exceeds {limit} bytes")
        length = self.request.headers.get("content-length")
        if length and is_uint(length) and int(length) > limit:
            raise too_big
        chunks, size = [], 0
        async for chunk in self.request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        self.raw_body = b"".join(chunks)
        return self.raw_body

    async def json(
        self, type_: type[T], limit: int | None = None, *, default: T | None = None
    ) -> T:
        """The body decoded as `type_`; an empty body gives `default` when there is one."""
        raw = await self.body(limit)
        if default is not None and not raw.strip():
            return default
        try:
            # msgspec keeps the last of duplicate keys and nests as deep as the stack goes:
            # the strict parser refuses both first, as the CLI does (same verdict either way).
            parse(raw, "json", source="request body")
            return msgspec.json.decode(raw, type=type_)
        except InvalidDocument as exc:
            raise ApiError(400, "invalid_json", exc.issues[0].message) from None
        except RecursionError:
            raise ApiError(
                400, "invalid_json", f"request body: nested deeper than {MAX_DEPTH} levels"
            ) from None
        except msgspec.ValidationError as exc:
            raise ApiError(
                422,
                "invalid_request",
                "the request body is not valid",
                issues=[issue_from_msgspec(exc, "")],
            ) from None
        except msgspec.DecodeError as exc:
            raise ApiError(400, "invalid_json", f"request body is not valid JSON: {exc}") from None

    def if_match(self) -> int | None:
        """The version the caller expects to be current; None for no header or `*`."""
        raw = self.request.headers.get("if-match")
        if raw is None:
            return None
        match = _if_match.fullmatch(raw.strip())
        if match is None:
            raise ApiError(400, "bad_request", "If-Match must be a version number")
        return None if match[1] is None else int(match[1])

    def idempotency_key(self) -> str | None:
        raw = self.request.headers.get("idempotency-key")
        if raw is None:
            return None
        if _idempotency_key.fullmatch(raw) is None:
            raise ApiError(400, "bad_request", f"Idempotency-Key must be {IDEMPOTENCY_KEY_RULE}")
        return raw

    def query(self, type_: type[Q]) -> Q:
        """The query string as `type_`; an empty parameter counts as absent."""
        values: dict[str, Any] = {}
        for f in msgspec.structs.fields(type_):
            name, raw = f.encode_name, self.request.query_params.get(f.encode_name)
            if raw is None or raw == "":
                if f.required:
                    raise ApiError(400, "bad_request", f"query parameter {name!r} is required")
                continue
            integer, wanted = _param_rule(f.type)
            try:
                if integer:
                    # int() and msgspec also take '+1', '1e3' or '²'; a version is digits.
                    if not is_uint(raw) or len(raw) > MAX_VERSION_DIGITS:
                        raise msgspec.ValidationError
                    values[f.name] = msgspec.convert(int(raw), f.type)
                else:  # lax: a boolean parameter reads `true` / `false`
                    values[f.name] = msgspec.convert(raw, f.type, strict=False)
            except msgspec.ValidationError:
                raise ApiError(
                    400, "bad_request", f"query parameter {name!r} must be {wanted}"
                ) from None
        return type_(**values)


@functools.cache
def _param_rule(tp: Any) -> tuple[bool, str]:
    """Whether a query parameter of type `tp` is an integer, and what it must be in words
    (read from its schema, so the answer says what the spec says)."""
    schema = msgspec.json.schema(non_null(tp))
    if schema.get("type") == "integer":
        return True, f"an integer from {schema['minimum']} to {schema['maximum']}"
    return False, str(schema.get("title", "valid"))


Handler = Callable[[Ctx], Awaitable[Response]]
WRITE_PERMISSIONS: frozenset[Permission] = frozenset(
    {"publish", "rollback", "rotate", "import", "steer"}
)


def endpoint(
    action: str, permission: Permission
) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            started = time.perf_counter()
            svc = services(request)
            ns = request.path_params.get("ns", "")
            if not is_namespace(ns):
                response: Response = ApiError(
                    404, "invalid_namespace", f"namespace must be {NAMESPACE_RULE}"
                ).response()
                svc.metrics.requests.labels(action, str(response.status_code)).inc()
                return response
            token = svc.tokens.lookup(request.headers.get("authorization"))
            refused: Exception | None = None
            if token is None and svc.sessions and "authorization" not in request.headers:
                token, refused = await svc.sessions.authenticate(request)
            actor = token.name if token else "anonymous"
            ctx: Ctx | None = None
            outcome = "ok"
            redis_down = False
            try:
                if refused is not None:
                    raise refused
                if token is None:
                    raise ApiError(
                        401,
                        "unauthorized",
                        "missing or unknown bearer token (Authorization: Bearer <token>)",
                        headers={"WWW-Authenticate": "Bearer"},
                    )
                if not allows(token.role, permission):
                    raise ApiError(
                        403,
                        "forbidden",
                        f"token {token.name!r} (role {token.role}) may not {action}",
                    )
                # Only now a Store: a stranger's made-up namespace costs nothing.
                ctx = Ctx(request, svc, ns, svc.store(ns), token, action)
                if permission in WRITE_PERMISSIONS:
                    decision = await ctx.run(lambda: svc.limiter.hit(token.name))
                    if not decision.allowed:
                        svc.metrics.rate_limited.inc()
                        raise ApiError(
                            429,
                            "rate_limited",
                            f"token {token.name!r}: more than {svc.limiter.limit} write "
                            f"requests in {svc.limiter.window_s}s",
                            headers={"Retry-After": str(decision.retry_after_s)},
                        )
                response = await handler(ctx)
            except Exception as exc:  # every error becomes a JSON answer, and is audited
                err = error_from(exc, svc.breaker)
                response = err.response()
                outcome = err.code
                redis_down = isinstance(exc, StoreUnavailable)
                if ctx is not None and isinstance(
                    exc, VersionConflict | IdempotencyMismatch | RolloutRunning
                ):
                    ctx.audited = True  # only Store.publish raises these; its script audits
            status = response.status_code
            if redis_down:
                # Redis just failed this request: an audit write would wait out a second
                # timeout before the 503 (and fail too). The log keeps the entry instead.
                svc.metrics.audit_failures.inc()
                log.warning(
                    "audit entry not written (Redis unavailable): action=%s actor=%s "
                    "outcome=%s status=%s",
                    action,
                    actor,
                    outcome,
                    status,
                )
            elif not (ctx and ctx.audited):
                fields = dict(ctx.audit_fields) if ctx else {}
                await svc.auditor.record(
                    svc,
                    ns,
                    permission,
                    action,
                    actor,
                    outcome,
                    method=request.method,
                    path=request.url.path,
                    status=status,
                    **fields,
                )
            svc.metrics.requests.labels(action, str(status)).inc()
            svc.metrics.latency.labels(action).observe(time.perf_counter() - started)
            return response

        return run

    return wrap
