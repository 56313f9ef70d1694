"""Errors a client sees, in OpenAI's error-body shape: ``{"error": {"message", "type", "code"}}``.

ProxyError              any answer that is not a success; carries status, type, code
├── (400) bad_request   the body is not a chat completion request; wrong_purpose: an
│                       embeddings model asked for chat, or the other way round
├── (401) unauthorized  no key, or a key that matches no enabled client
├── (403) forbidden     the client may not use that model; ip_denied: the address is refused
├── (404) model_not_found
├── (413) too_large     the body is over the limit
├── (429) rate_limited  a limit (global, provider, key, model, ip: in `param`); carries
│                       Retry-After and OpenAI's x-ratelimit-* headers
├── (429) budget_exceeded  the key's or its team's spend budget is used up (`param`: key
│                       or team); Retry-After: when the budget's period ends
├── (502) bad_gateway   every upstream failed
├── (503) unavailable   no config yet, or every upstream's breaker is open
└── (504) timeout       the upstream timed out
"""

from __future__ import annotations

import msgspec
from starlette.responses import Response

_encode = msgspec.json.Encoder().encode


class ErrorBody(msgspec.Struct, frozen=True):
    message: str
    type: str
    code: str | None = None
    # Set only where it says something (which limit refused); unset, it is not encoded.
    param: str | msgspec.UnsetType = msgspec.UNSET


class ErrorEnvelope(msgspec.Struct, frozen=True):
    error: ErrorBody


class ProxyError(Exception):
    """An answer that is not a success; `response()` renders it."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        param: str | msgspec.UnsetType = msgspec.UNSET,
    ) -> None:
        super().__init__(message)
        self.param = param
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.headers = headers

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.code, self.param)

    def response(self) -> Response:
        return Response(
            self.body(), self.status, headers=self.headers, media_type="application/json"
        )


def error_body(
    message: str,
    type_: str,
    code: str | None = None,
    param: str | msgspec.UnsetType = msgspec.UNSET,
) -> bytes:
    return _encode(ErrorEnvelope(ErrorBody(message, type_, code, param)))


def internal() -> ProxyError:
    """A failure of the replica itself (an unhandled error on any route)."""
    return ProxyError(500, "internal error", "server_error", "internal_error")


def bad_request(message: str, code: str | None = None) -> ProxyError:
    return ProxyError(400, message, "invalid_request_error", code)


def wrong_purpose(model: str, purpose: str) -> ProxyError:
    endpoint = "/v1/embeddings" if purpose == "embeddings" else "/v1/chat/completions"
    return ProxyError(
        400,
        f"model '{model}' serves {purpose}: call {endpoint}",
        "invalid_request_error",
        "wrong_model_purpose",
    )


def unauthorized(message: str = "invalid or missing API key") -> ProxyError:
    return ProxyError(401, message, "authentication_error", "invalid_api_key")


def forbidden(model: str) -> ProxyError:
    return ProxyError(
        403, f"this key may not use model '{model}'", "permission_error", "model_not_allowed"
    )


def model_not_found(model: str) -> ProxyError:
    return ProxyError(
        404, f"model '{model}' does not exist", "invalid_request_error", "model_not_found"
    )


def too_large(limit: int) -> ProxyError:
    return ProxyError(
        413,
        f"request body is larger than {limit} bytes",
        "invalid_request_error",
        "request_too_large",
    )


def ip_denied(address: str) -> ProxyError:
    return ProxyError(
        403, f"address {address} may not call this API", "permission_error", "ip_denied",
        param="ip",
    )  # fmt: skip


def rate_limited(
    message: str, headers: dict[str, str], *, param: str | msgspec.UnsetType = msgspec.UNSET
) -> ProxyError:
    return ProxyError(429, message, "rate_limit_error", "rate_limit_exceeded", headers, param)


def budget_exceeded(message: str, scope: str, headers: dict[str, str] | None) -> ProxyError:
    return ProxyError(429, message, "insufficient_quota", "budget_exceeded", headers, scope)


def bad_gateway(message: str) -> ProxyError:
    return ProxyError(502, message, "upstream_error", "bad_gateway")


def unavailable(message: str, code: str = "service_unavailable") -> ProxyError:
    return ProxyError(503, message, "service_unavailable", code)


def timeout(message: str) -> ProxyError:
    return ProxyError(504, message, "timeout_error", "upstream_timeout")
