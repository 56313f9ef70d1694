"""A fake LLM upstream for tests and benchmarks: OpenAI chat completions and embeddings,
Anthropic messages, and Azure OpenAI's deployment URLs.

Every answer names the upstream that served it (content ``served by <name>`` and the header
``x-served-by``). Behaviour is settable at run time::

    POST /_control {"fail_rate": 1.0, "status": 500, "latency_ms": 0,
                    "stream_chunks": 3, "chunk_delay_ms": 0, "usage_tokens": 0,
                    "prompt_tokens": 0, "completion_tokens": 0}
    GET  /_stats   -> {"name", "requests", "failures", "last_request", "last_headers",
                       "prompt_tokens", "completion_tokens"}
    POST /_reset   -> zero the counters

Azure OpenAI: `POST /openai/deployments/<deployment>/chat/completions?api-version=...` (and
`.../embeddings`) answer like OpenAI, with the deployment as the model; without the
`api-version` query they answer 404 and without an `api-key` header 401, in Azure's error
shapes, as do failures set by `/_control` on those paths. `/_stats` has `last_path` and
`last_query` of the last request.

Answers report usage (4 tokens, or `usage_tokens` when set; `prompt_tokens` and
`completion_tokens`, when set, say each part); a stream ends with a usage chunk when the
request asks for it (`stream_options.include_usage`), as OpenAI's does. `/_stats` sums the
tokens it reported, so a test can compare what the proxy counted with what was reported.

It is a bare ASGI app (no framework) so that it stays cheap: it is the benchmark's upstream.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Control(msgspec.Struct, kw_only=True):
    fail_rate: float = 0.0
    status: int = 500
    latency_ms: float = 0.0
    stream_chunks: int = 3
    chunk_delay_ms: float = 0.0
    usage_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class _ControlPatch(msgspec.Struct, kw_only=True, omit_defaults=True):
    fail_rate: float | None = None
    status: int | None = None
    latency_ms: float | None = None
    stream_chunks: int | None = None
    chunk_delay_ms: float | None = None
    usage_tokens: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


_encode = msgspec.json.Encoder().encode
_decode_any = msgspec.json.Decoder().decode
_decode_patch = msgspec.json.Decoder(_ControlPatch).decode


class MockUpstream:
    """The ASGI app. One instance per process; state is plain attributes (one event loop)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.control = Control()
        self.requests = 0
        self.failures = 0
        self.prompt_tokens = self.completion_tokens = 0  # reported in answers, summed
        self.last_request: Any = None
        self.last_headers: dict[str, str] = {}
        self.last_path = ""
        self.last_query = ""
        self._ids = itertools.count(1)
        self._content = f"served by {name}"
        self._json_headers = [
            (b"content-type", b"application/json"),
            (b"x-served-by", name.encode()),
        ]
        self._sse_headers = [
            (b"content-type", b"text/event-stream"),
            (b"cache-control", b"no-cache"),
            (b"x-served-by", name.encode()),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if method == "POST" and path.startswith("/openai/deployments/"):
            await self._azure(scope, receive, send)
        elif method == "POST" and path.endswith("/chat/completions"):
            await self._chat(scope, receive, send, anthropic=False)
        elif method == "POST" and path.endswith("/embeddings"):
            await self._chat(scope, receive, send, anthropic=False, embeddings=True)
        elif method == "POST" and path.endswith("/messages"):
            await self._chat(scope, receive, send, anthropic=True)
        elif method == "GET" and path.endswith("/models"):
            # Failures set by /_control apply here too: a provider test sees them.
            self._record(scope)
            c = self.control
            if c.fail_rate > 0 and random.random() < c.fail_rate:
                self.failures += 1
                err = {"error": {"message": f"{self.name} mock failure", "type": "server_error"}}
                await self._send(send, c.status, _encode(err))
                return
            body = {
                "object": "list",
                "data": [
                    {
                        "id": f"mock-{self.name}",
                        "object": "model",
                        "created": 0,
                        "owned_by": self.name,
                    }
                ],
            }
            await self._send(send, 200, _encode(body))
        elif path == "/_control" and method == "POST":
            patch = _decode_patch(await _read_body(receive))
            for field in patch.__struct_fields__:
                value = getattr(patch, field)
                if value is not None:
                    setattr(self.control, field, value)
            await self._send(send, 200, _encode(self.control))
        elif path == "/_stats":
            await self._send(
                send,
                200,
                _encode(
                    {
                        "name": self.name,
                        "requests": self.requests,
                        "failures": self.failures,
                        "last_request": self.last_request,
                        "last_headers": self.last_headers,
                        "last_path": self.last_path,
                        "last_query": self.last_query,
                        "control": self.control,
                        "prompt_tokens": self.prompt_tokens,
                        "completion_tokens": self.completion_tokens,
                    }
                ),
            )
        elif path == "/_reset" and method == "POST":
            self.requests = self.failures = 0
            self.prompt_tokens = self.completion_tokens = 0
            self.last_request = None
            await self._send(send, 200, b"{}")
        else:
            await self._send(
                send,
                404,
                _encode(
                    {
                        "error": {
                            "message": f"no route {method} {path}",
                            "type": "invalid_request_error",
                            "code": "not_found",
                        }
                    }
                ),
            )

    async def _send(
        self, send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": headers or self._json_headers,
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _azure(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Azure OpenAI: the deployment in the path, `api-version` in the query, `api-key`."""
        path: str = scope["path"]
        parts = path.split("/")  # '', openai, deployments, <name>, chat, completions
        deployment, rest = parts[3], "/".join(parts[4:])
        query = scope.get("query_string", b"").decode("latin-1")
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if "api-version=" not in query:
            await _read_body(receive)
            self._record(scope)
            await self._send(send, 404, _encode({"error": {"code": "404",
                             "message": "Resource not found"}}))  # fmt: skip
            return
        if "api-key" not in headers:
            await _read_body(receive)
            self._record(scope)
            await self._send(send, 401, _encode({"statusCode": 401, "message": "Access denied "
                             "due to invalid subscription key or wrong API endpoint."}))  # fmt: skip
            return
        if rest not in ("chat/completions", "embeddings"):
            await _read_body(receive)
            await self._send(send, 404, _encode({"error": {"code": "404",
                             "message": "Resource not found"}}))  # fmt: skip
            return
        await self._chat(
            scope, receive, send, anthropic=False, embeddings=rest == "embeddings",
            azure=deployment,
        )  # fmt: skip

    def _record(self, scope: Scope) -> None:
        self.last_path = scope["path"]
        self.last_query = scope.get("query_string", b"").decode("latin-1")
        self.last_headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

    async def _chat(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        anthropic: bool,
        embeddings: bool = False,
        azure: str | None = None,
    ) -> None:
        raw = await _read_body(receive)
        self.requests += 1
        try:
            req = _decode_any(raw)
        except msgspec.DecodeError:
            await self._send(
                send,
                400,
                _encode(
                    {
                        "error": {
                            "message": "body is not JSON",
                            "type": "invalid_request_error",
                            "code": None,
                        }
                    }
                ),
            )
            return
        self.last_request = req
        self._record(scope)
        c = self.control
        if c.latency_ms > 0:
            await asyncio.sleep(c.latency_ms / 1000)
        if c.fail_rate > 0 and random.random() < c.fail_rate:
            self.failures += 1
            if anthropic:
                err: Any = {
                    "type": "error",
                    "error": {"type": "api_error", "message": f"{self.name} mock failure"},
                }
            elif azure is not None:  # Azure's shape: a code (a word or the status), no type
                code = "content_filter" if c.status == 400 else str(c.status)
                err = {
                    "error": {
                        "code": code,
                        "message": f"{self.name} mock failure",
                        "param": "prompt" if c.status == 400 else None,
                        "status": c.status,
                        "innererror": {"code": "ResponsibleAIPolicyViolation"},
                    }
                }
            else:
                err = {
                    "error": {
                        "message": f"{self.name} mock failure",
                        "type": "server_error",
                        "code": None,
                    }
                }
            await self._send(send, c.status, _encode(err))
            return
        model = req.get("model", "mock") if isinstance(req, dict) else "mock"
        if azure is not None:
            model = azure  # Azure answers with the deployment's model
        stream = isinstance(req, dict) and req.get("stream") is True
        n = next(self._ids)
        if embeddings:
            await self._send(send, 200, _encode(self._embeddings(req, model)))
        elif anthropic:
            if stream:
                await self._stream(send, self._anthropic_events(n, model))
            else:
                await self._send(send, 200, _encode(self._anthropic_message(n, model)))
        elif stream:
            opts = req.get("stream_options")
            usage = isinstance(opts, dict) and opts.get("include_usage") is True
            await self._stream(send, self._openai_events(n, model, usage=usage))
        else:
            await self._send(send, 200, _encode(self._openai_completion(n, model)))

    async def _stream(self, send: Send, events: list[bytes]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self._sse_headers})
        delay = self.control.chunk_delay_ms / 1000
        for ev in events:
            await send({"type": "http.response.body", "body": ev, "more_body": True})
            if delay > 0:
                await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b""})

    def _pieces(self) -> list[str]:
        k = max(1, self.control.stream_chunks)
        text, size = self._content, -(-len(self._content) // k)
        return [text[i : i + size] for i in range(0, len(text), size)]

    def _usage(self) -> dict[str, int]:
        """The usage of one answer, counted as reported."""
        c = self.control
        if c.prompt_tokens or c.completion_tokens:
            prompt, completion = c.prompt_tokens, c.completion_tokens
        else:
            total = c.usage_tokens or 4
            prompt = min(1, total - 1) if total > 1 else 0
            completion = total - prompt
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def _openai_completion(self, n: int, model: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-mock-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self._content},
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(),
        }

    def _openai_events(self, n: int, model: str, *, usage: bool = False) -> list[bytes]:
        base = {
            "id": f"chatcmpl-mock-{n}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        deltas: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": ""}, None)
        ]
        deltas += [({"content": p}, None) for p in self._pieces()]
        deltas.append(({}, "stop"))
        out = [
            b"data: "
            + _encode({**base, "choices": [{"index": 0, "delta": d, "finish_reason": f}]})
            + b"\n\n"
            for d, f in deltas
        ]
        if usage:
            out.append(
                b"data: " + _encode({**base, "choices": [], "usage": self._usage()}) + b"\n\n"
            )
        out.append(b"data: [DONE]\n\n")
        return out

    def _embeddings(self, req: Any, model: str) -> dict[str, Any]:
        """One small vector per input, the same for the same text and upstream."""
        given = req.get("input", "") if isinstance(req, dict) else ""
        inputs = given if isinstance(given, list) else [given]
        data = []
        for i, text in enumerate(inputs):
            seed = sum(f"{self.name}:{text}".encode())
            data.append(
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": [((seed * (k + 7)) % 1000) / 1000 for k in range(4)],
                }
            )
        tokens = self.control.usage_tokens or 2 * len(inputs)
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def _anthropic_message(
        self, n: int, model: str, usage: dict[str, int] | None = None
    ) -> dict[str, Any]:
        u = usage or self._usage()
        return {
            "id": f"msg_mock_{n}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": self._content}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": u["prompt_tokens"], "output_tokens": u["completion_tokens"]},
        }

    def _anthropic_events(self, n: int, model: str) -> list[bytes]:
        u = self._usage()
        msg = {
            **self._anthropic_message(n, model, u),
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": u["prompt_tokens"], "output_tokens": 0},
        }
        events: list[tuple[str, Any]] = [
            ("message_start", {"type": "message_start", "message": msg}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            ("ping", {"type": "ping"}),
        ]
        events += [
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": p},
                },
            )
            for p in self._pieces()
        ]
        events += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": u["completion_tokens"]},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        return [
            f"event: {name}\n".encode() + b"data: " + _encode(data) + b"\n\n"
            for name, data in events
        ]


async def _read_body(receive: Receive) -> bytes:
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    while msg.get("more_body"):
        msg = await receive()
        parts.append(msg.get("body", b""))
    return b"".join(parts)


def create_app(name: str) -> MockUpstream:
    return MockUpstream(name)


def run(host: str, port: int, name: str) -> None:
    """Serve a mock upstream with uvicorn (uvloop + httptools) until interrupted."""
    import uvicorn

    uvicorn.run(
        create_app(name),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
