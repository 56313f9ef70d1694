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


async def test_an_unhandled_error_on_the_hot_path_answers_500_in_openais_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from proxy.chat import ChatHandler

    async def broken(*_: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(ChatHandler, "__call__", broken)
    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    handler = ChatHandler.__new__(ChatHandler)
    await handler.serve({"path": "/v1/chat/completions"}, None, send)  # type: ignore[arg-type]
    start, body = sent
    headers = dict(start["headers"])  # type: ignore[call-overload]
    assert start["status"] == 500 and headers[b"content-type"] == b"application/json"
    assert headers[b"x-request-id"]
    assert msgspec.json.decode(body["body"]) == {  # type: ignore[arg-type]
        "error": {"message": "internal error", "type": "server_error", "code": "internal_error"}
    }
