"""The admin's answers: a JSON body of the contract, and every error as the contract's error
envelope (`error_from` maps configbus errors onto HTTP statuses)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from msgspec import UNSET
from starlette.responses import Response

from admin.breaker import BreakerOpen, CircuitBreaker
from configbus.api import ErrorBody, ErrorEnvelope
from configbus.breaker import BreakerState
from configbus.errors import (
    CorruptRecord,
    DamagedNamespace,
    IdempotencyMismatch,
    InvalidDocument,
    Issue,
    NotReplicated,
    RolloutConflict,
    RolloutRunning,
    SecretError,
    StoreError,
    StoreUnavailable,
    VersionConflict,
    VersionNotFound,
)

log = logging.getLogger("admin")
_encoder = msgspec.json.Encoder()


class JSON(Response):
    """A body of the contract (`configbus.api`), encoded by the one encoder."""

    media_type = "application/json"

    def __init__(
        self, content: msgspec.Struct, status_code: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(content, status_code, headers)

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


class ApiError(Exception):
    """An error answer: HTTP status, a stable code, a message, and issues with paths."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        issues: Sequence[Issue] = (),
        headers: dict[str, str] | None = None,
        current_version: int | None = None,
        replicas_acked: int | None = None,
        current_revision: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(
            code=code,
            message=message,
            issues=list(issues),
            current_version=UNSET if current_version is None else current_version,
            replicas_acked=UNSET if replicas_acked is None else replicas_acked,
            current_revision=UNSET if current_revision is None else current_revision,
        )
        self.headers = headers or {}

    @property
    def code(self) -> str:
        return self.body.code

    def response(self) -> JSON:
        return JSON(ErrorEnvelope(error=self.body), status_code=self.status, headers=self.headers)


def error_from(exc: Exception, breaker: CircuitBreaker) -> ApiError:
    """Map a configbus error onto its HTTP answer; messages carry no secrets."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidDocument):
        return ApiError(422, "invalid_document", "the document is not valid", issues=exc.issues)
    if isinstance(exc, SecretError):
        return ApiError(422, "invalid_secret", str(exc), issues=[Issue("", str(exc))])
    if isinstance(exc, VersionConflict):
        return ApiError(
            409,
            "version_conflict",
            str(exc),
            current_version=exc.current,
            headers={"ETag": f'"{exc.current}"'},
        )
    if isinstance(exc, VersionNotFound):
        return ApiError(404, "version_not_found", str(exc))
    if isinstance(exc, IdempotencyMismatch):
        return ApiError(422, "idempotency_mismatch", str(exc))
    if isinstance(exc, RolloutRunning):
        return ApiError(409, "rollout_running", str(exc))
    if isinstance(exc, RolloutConflict):
        return ApiError(409, "rollout_conflict", str(exc))
    if isinstance(exc, BreakerOpen):
        return ApiError(
            503,
            "store_unavailable",
            str(exc),
            headers={"Retry-After": breaker.retry_after_header()},
        )
    if isinstance(exc, StoreUnavailable):
        retry = breaker.retry_after_header() if breaker.state is not BreakerState.CLOSED else "1"
        return ApiError(
            503,
            "store_unavailable",
            "Redis unavailable; retry later",
            headers={"Retry-After": retry},
        )
    # Damage someone did to the namespace's keys: the request conflicts with the state it
    # found, and the message says what is wrong and how to repair it.
    if isinstance(exc, DamagedNamespace):
        return ApiError(409, "damaged_namespace", str(exc))
    if isinstance(exc, NotReplicated):
        return ApiError(
            503,
            "not_replicated",
            str(exc),
            current_version=exc.version,
            replicas_acked=exc.acked,
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, CorruptRecord):
        return ApiError(409, "corrupt_record", str(exc))
    if isinstance(exc, StoreError):  # Redis refused the command (a key of the wrong type...)
        return ApiError(503, "store_error", str(exc), headers={"Retry-After": "1"})
    # A bug: answer in the same shape, log the traceback (documents hold no plaintext
    # secret in their repr), and still audit the action.
    log.error("unexpected error", exc_info=exc)
    return ApiError(500, "internal_error", "internal error; see the admin service's log")
