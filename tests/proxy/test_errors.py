from __future__ import annotations

import msgspec
import pytest

from proxy import errors
from proxy.errors import ProxyError


@pytest.mark.parametrize(
    ("err", "status", "type_", "code"),
    [
        (errors.bad_request("x"), 400, "invalid_request_error", None),
        (errors.unauthorized(), 401, "authentication_error", "invalid_api_key"),
        (errors.forbidden("m"), 403, "permission_error", "model_not_allowed"),
        (errors.model_not_found("m"), 404, "invalid_request_error", "model_not_found"),
        (errors.too_large(10), 413, "invalid_request_error", "request_too_large"),
        (
            errors.rate_limited("slow", {"retry-after": "3"}),
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        (errors.bad_gateway("x"), 502, "upstream_error", "bad_gateway"),
        (errors.unavailable("x"), 503, "service_unavailable", "service_unavailable"),
        (errors.timeout("x"), 504, "timeout_error", "upstream_timeout"),
    ],
)
def test_error_shape(err: ProxyError, status: int, type_: str, code: str | None) -> None:
    resp = err.response()
    assert resp.status_code == status
    assert resp.headers["content-type"] == "application/json"
    body = msgspec.json.decode(resp.body)
    assert body == {"error": {"message": err.message, "type": type_, "code": code}}


def test_rate_limited_carries_retry_after() -> None:
    resp = errors.rate_limited("slow", {"retry-after": "3", "x-ratelimit-limit": "5"}).response()
    assert resp.headers["retry-after"] == "3"
    assert resp.headers["x-ratelimit-limit"] == "5"


def test_messages_name_the_thing() -> None:
    assert "'gpt-x'" in errors.model_not_found("gpt-x").message
    assert "1000 bytes" in errors.too_large(1000).message
