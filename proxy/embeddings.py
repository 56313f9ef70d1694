"""`POST /v1/embeddings`: the request's checks. Everything else (auth, limits, routing,
retries, fallbacks, breakers, the cache) is the chat endpoint's handler, run for models
whose `purpose` is `embeddings` (`proxy.chat.ChatHandler(purpose="embeddings")`)."""

from __future__ import annotations

from typing import Any

from proxy import errors
from proxy.body import model_request


def parse_embeddings(body: bytes) -> dict[str, Any]:
    """An OpenAI embeddings request: `model` and a non-empty `input` (a string, a list of
    strings, a list of token ids or a list of token-id lists)."""
    req = model_request(body)
    given = req.get("input")
    if isinstance(given, str):
        if not given:
            raise errors.bad_request("'input' must not be empty", "missing_input")
    elif isinstance(given, list) and given:
        for i, item in enumerate(given):
            if not (isinstance(item, (str, int)) or _token_list(item)):
                raise errors.bad_request(
                    f"input[{i}] must be a string, a token id or a list of token ids"
                )
    else:
        raise errors.bad_request(
            "'input' must be a non-empty string or list (strings or token ids)", "missing_input"
        )
    if "stream" in req:
        raise errors.bad_request("embeddings are not streamed: remove 'stream'")
    return req


def _token_list(item: Any) -> bool:
    return isinstance(item, list) and all(
        isinstance(t, int) and not isinstance(t, bool) for t in item
    )
