"""Azure OpenAI's error bodies in OpenAI's shape.

Azure answers OpenAI's request and response bodies, but its errors differ: a `code` (a word
like `DeploymentNotFound` or `content_filter`, or the status as a string) and no `type`, an
`innererror` with content-filter details, or, from its gateway, `{"statusCode", "message"}`.
The URL (`/openai/deployments/<deployment>/...?api-version=`) and the `api-key` header are
the provider's (`proxy.upstream`).
"""

from __future__ import annotations

from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_to_openai(status: int, body: bytes) -> bytes:
    """An Azure OpenAI error body as OpenAI's ``{"error": {"message", "type", "code"}}``."""
    message, code, param = f"upstream answered {status}", None, None
    try:
        doc: Any = _decode(body)
    except msgspec.DecodeError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict):
            message = _text(err.get("message")) or message
            code = _text(err.get("code"))
            param = _text(err.get("param"))
        elif isinstance(doc.get("message"), str):  # the gateway's {"statusCode", "message"}
            message = doc["message"]
    kind = TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    out: dict[str, Any] = {"message": message, "type": kind, "code": code}
    if param is not None:
        out["param"] = param
    return _encode({"error": out})


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
