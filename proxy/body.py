"""A request body as every OpenAI-style endpoint takes it: a JSON object naming a `model`.
The endpoints check the rest (`proxy.chat.parse_request`, `proxy.embeddings`)."""

from __future__ import annotations

from typing import Any

import msgspec

from proxy import errors

_decode = msgspec.json.Decoder().decode


def model_request(body: bytes) -> dict[str, Any]:
    """The body as a dict with a string `model`; a 400 naming what is wrong otherwise."""
    try:
        req = _decode(body)
    except msgspec.DecodeError as exc:
        raise errors.bad_request(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise errors.bad_request("body is nested too deeply") from None
    if not isinstance(req, dict):
        raise errors.bad_request("body must be a JSON object")
    if not isinstance(req.get("model"), str):
        raise errors.bad_request("'model' is required and must be a string", "missing_model")
    return req
