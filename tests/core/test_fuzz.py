"""Issue 19: property-based fuzzing of every parser a stranger can reach. Each either answers
or refuses with the error its caller turns into a 4xx (or a 502 for an upstream's answer);
nothing else escapes, and nothing hangs. Derandomized, so `make test` is repeatable; about
30 s in all."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from configbus.codec import decode_body, parse
from configbus.errors import InvalidDocument
from configbus.testing import sample_data
from configbus.validation import to_document
from proxy import anthropic
from proxy.chat import parse_request
from proxy.errors import ProxyError
from tests.admin.helpers import app_for, auth, client
from tests.support import RedisServer

FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=1000,
    suppress_health_check=list(HealthCheck),
    database=None,
)

# Keys the code under test looks for, so examples reach past the first `.get`.
KEYS = st.sampled_from(
    ["model", "messages", "role", "content", "type", "text", "tools", "function", "name",
     "tool_choice", "tool_calls", "input", "id", "usage", "input_tokens", "output_tokens",
     "stop_reason", "delta", "index", "content_block", "message", "max_tokens", "system",
     "image_url", "url", "arguments", "stop", "user", "providers", "models", "clients",
     "base_url", "api_key", "secret", "deployments", "provider", "fallbacks", "weight",
     "logging", "level", "metadata", "tool_use", "text_delta", "input_json_delta",
     "partial_json", "message_start", "content_block_start", "content_block_delta",
     "message_delta", "message_stop", "tool_call_id", "parameters", "stream"]
)  # fmt: skip
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | KEYS
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(KEYS | st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=8,
)
DEEP = b"[" * 5000 + b"]" * 5000
DEEP_OBJECT = b'{"a":' * 5000 + b"1" + b"}" * 5000


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def _mutated_sample(path: list[Any], value: Any) -> dict[str, Any]:
    """The sample document with `value` put at a spot picked by `path`."""
    data: Any = sample_data()
    node = data
    for step in path:
        if isinstance(node, dict) and node:
            key = sorted(node)[step % len(node)]
            if not isinstance(node[key], dict | list) or step % 3 == 0:
                node[key] = value
                return data  # type: ignore[no-any-return]
            node = node[key]
        elif isinstance(node, list) and node:
            i = step % len(node)
            if not isinstance(node[i], dict | list) or step % 3 == 0:
                node[i] = value
                return data  # type: ignore[no-any-return]
            node = node[i]
    return data  # type: ignore[no-any-return]


DOCUMENTS = st.builds(_mutated_sample, st.lists(st.integers(0, 50), max_size=6), JSONISH) | JSONISH


@settings(FUZZ, max_examples=1500)
@given(st.one_of(st.binary(max_size=200), DOCUMENTS.map(_encode)))
@example(DEEP)
@example(DEEP_OBJECT)
@example(b'{"providers": [], "providers": []}')
def test_document_decoder(body: bytes) -> None:
    for attempt in (
        lambda: decode_body(body),
        lambda: parse(body, "json"),
        lambda: parse(body, "yaml"),
        lambda: parse(body, "toml"),
    ):
        try:
            attempt()
        except InvalidDocument:
            pass


@FUZZ
@given(DOCUMENTS)
def test_to_document(data: Any) -> None:
    try:
        to_document(data)
    except InvalidDocument:
        pass


REQUESTS = st.fixed_dictionaries(
    {
        "model": st.text(max_size=10),
        "messages": st.lists(st.dictionaries(KEYS, JSONISH, max_size=3), min_size=1, max_size=3),
    },
    optional={
        "tools": st.lists(st.dictionaries(KEYS, JSONISH, max_size=4), max_size=3),
        "tool_choice": JSONISH,
        "max_tokens": JSONISH,
        "stop": JSONISH,
        "user": JSONISH,
        "stream": JSONISH,
        "temperature": JSONISH,
    },
)


@FUZZ
@given(st.one_of(st.binary(max_size=200), JSONISH.map(_encode), REQUESTS.map(_encode)))
def test_proxy_request_parser_and_anthropic_request(body: bytes) -> None:
    try:
        req = parse_request(body)
    except ProxyError:
        return
    try:
        anthropic.to_anthropic(req, "claude")
    except (KeyError, TypeError, ValueError, AttributeError, msgspec.DecodeError):
        pass  # proxy/chat.py answers these with a 400


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
def test_proxy_request_parser_refuses_deep_nesting(body: bytes) -> None:
    with pytest.raises(ProxyError):
        parse_request(body)


@FUZZ
@given(JSONISH)
def test_anthropic_response(resp: Any) -> None:
    try:
        anthropic.from_anthropic(resp)
    except (msgspec.DecodeError, AttributeError, TypeError):
        pass  # proxy/chat.py answers these with a 502


EVENTS = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.dictionaries(KEYS, JSONISH, max_size=3).map(
            lambda ev: b"data: " + _encode(ev) + b"\n\n"
        ),
    ),
    max_size=3,
)


@settings(FUZZ, max_examples=1000)
@given(EVENTS)
def test_anthropic_stream(chunks: list[bytes]) -> None:
    t = anthropic.StreamTranslator()
    try:
        for chunk in chunks:
            t.feed(chunk)
    except (msgspec.DecodeError, AttributeError, TypeError, KeyError, ValueError):
        pass  # proxy/chat.py ends the stream in-band on these


ADMIN_CALLS = [
    ("PUT", "config"),
    ("PATCH", "config"),
    ("POST", "validate"),
    ("POST", "rollback"),
    ("POST", "rollouts"),
    ("POST", "import"),
    ("POST", "rotate-secrets"),
]


def test_admin_bodies(redis_server: RedisServer) -> None:
    """Every body the admin decodes, through the in-process app: never a 500."""
    loop = asyncio.new_event_loop()
    ns = "fuzz-admin"
    cm = client(app_for(redis_server.url))
    c = loop.run_until_complete(cm.__aenter__())
    try:
        r = loop.run_until_complete(
            c.put(
                f"/v1/namespaces/{ns}/config",
                headers=auth("admin"),
                json={"document": sample_data()},
            )
        )
        assert r.status_code in (200, 201), r.text

        @settings(FUZZ, max_examples=600)
        @given(
            st.sampled_from(ADMIN_CALLS),
            st.one_of(
                st.binary(max_size=100),
                JSONISH.map(_encode),
                DOCUMENTS.map(lambda d: _encode({"document": d, "message": "fuzz"})),
                DOCUMENTS.map(
                    lambda d: _encode({"document": d, "stages": [{"selector": "tier=none"}]})
                ),
            ),
        )
        @example(("PUT", "config"), DEEP)
        def call(route: tuple[str, str], body: bytes) -> None:
            method, path = route
            resp = loop.run_until_complete(
                c.request(
                    method,
                    f"/v1/namespaces/{ns}/{path}",
                    headers={**auth("admin"), "content-type": "application/json"},
                    content=body,
                )
            )
            assert resp.status_code < 500, (method, path, body[:200], resp.text)
            if resp.status_code == 201 and path == "rollouts":  # keep publishing possible
                loop.run_until_complete(
                    c.post(f"/v1/namespaces/{ns}/rollout/abort", headers=auth("admin"), json={})
                )

        call()
    finally:
        loop.run_until_complete(cm.__aexit__(None, None, None))
        loop.close()
