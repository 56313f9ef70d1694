"""Chat completions ⇄ Anthropic Messages API, both ways, streams included.

Request: system messages become `system`; text and image parts, assistant `tool_calls` and
`tool` messages become content blocks; `tools`, `stop`, `max_tokens` and sampling params map
to their Messages API names. Response: content blocks become the message text and
`tool_calls`; `stop_reason` becomes `finish_reason`; usage is renamed. A stream of Messages
API events becomes a stream of `chat.completion.chunk` events ending in ``data: [DONE]``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

DEFAULT_MAX_TOKENS = 1024
API_VERSION = "2023-06-01"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}

# OpenAI names → Messages API names for parameters that only differ in name.
_PASS = ("temperature", "top_p", "top_k", "metadata")


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            out.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            url = part.get("image_url", {}).get("url", "")
            if url.startswith("data:") and ";base64," in url:
                media, data = url[5:].split(";base64,", 1)
                out.append(
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": media, "data": data},
                    }
                )
            else:
                out.append({"type": "image", "source": {"type": "url", "url": url}})
    return out


def to_anthropic(req: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completion request (params already merged) as a Messages API request."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for m in req.get("messages", ()):
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content")))
            continue
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id", ""),
                "content": _text_of(m.get("content")),
            }
            if (
                messages
                and messages[-1]["role"] == "user"
                and isinstance(messages[-1]["content"], list)
            ):
                messages[-1]["content"].append(block)
            else:
                messages.append({"role": "user", "content": [block]})
            continue
        blocks = _blocks(m.get("content"))
        if role == "assistant":
            for call in m.get("tool_calls") or ():
                fn = call.get("function", {})
                args = fn.get("arguments") or "{}"
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id", ""),
                        "name": fn.get("name", ""),
                        "input": _decode(args) if isinstance(args, str) else args,
                    }
                )
        messages.append({"role": "assistant" if role == "assistant" else "user", "content": blocks})
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": req.get("max_completion_tokens")
        or req.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for k in _PASS:
        if req.get(k) is not None:
            out[k] = req[k]
    stop = req.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if req.get("stream"):
        out["stream"] = True
    tools = req.get("tools")
    if tools:
        out["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters")
                or {"type": "object", "properties": {}},
            }
            for t in tools
            if t.get("type") == "function"
        ]
        choice = req.get("tool_choice")
        if choice == "required":
            out["tool_choice"] = {"type": "any"}
        elif choice == "auto":
            out["tool_choice"] = {"type": "auto"}
        elif isinstance(choice, dict) and "function" in choice:
            out["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
    user = req.get("user")
    if user:
        out["metadata"] = {**out.get("metadata", {}), "user_id": user}
    return out


def from_anthropic(resp: dict[str, Any]) -> dict[str, Any]:
    """A Messages API response as an OpenAI chat completion."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in resp.get("content", ()):
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": _encode(block.get("input", {})).decode(),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    usage = resp.get("usage") or {}
    pin, pout = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    return {
        "id": resp.get("id", ""),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": resp.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH_REASONS.get(resp.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": {"prompt_tokens": pin, "completion_tokens": pout, "total_tokens": pin + pout},
    }


def error_to_openai(status: int, body: bytes) -> bytes:
    """A Messages API error body in OpenAI's error shape."""
    message, kind = f"upstream answered {status}", "upstream_error"
    try:
        err = _decode(body).get("error") or {}
        message = err.get("message") or message
        kind = err.get("type") or kind
    except (msgspec.DecodeError, AttributeError):
        pass
    return _encode({"error": {"message": message, "type": kind, "code": None}})


class StreamTranslator:
    """Feed it the bytes of a Messages API event stream; it returns chat.completion.chunk SSE."""

    def __init__(self) -> None:
        self._buf = b""
        self._base: dict[str, Any] = {
            "id": "",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": "",
        }
        self._tools: dict[int, int] = {}  # content block index -> tool_calls index
        self._usage: dict[str, int] = {}
        self.done = False

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        out: list[bytes] = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                break
            event, self._buf = self._buf[:end], self._buf[end + 2 :]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    chunk = self._event(_decode(line[5:].strip()))
                    if chunk:
                        out.append(chunk)
        return b"".join(out)

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None
    ) -> bytes:
        body = {**self._base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage is not None:
            body["usage"] = usage
        return b"data: " + _encode(body) + b"\n\n"

    def _event(self, ev: dict[str, Any]) -> bytes:
        kind = ev.get("type")
        if kind == "message_start":
            msg = ev.get("message", {})
            self._base["id"] = msg.get("id", "")
            self._base["model"] = msg.get("model", "")
            self._usage["prompt_tokens"] = (msg.get("usage") or {}).get("input_tokens", 0)
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = ev.get("content_block", {})
            if block.get("type") == "tool_use":
                i = self._tools[ev.get("index", 0)] = len(self._tools)
                return self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": i,
                                "id": block.get("id", ""),
                                "type": "function",
                                "function": {"name": block.get("name", ""), "arguments": ""},
                            }
                        ]
                    }
                )
            if block.get("text"):
                return self._chunk({"content": block["text"]})
            return b""
        if kind == "content_block_delta":
            delta = ev.get("delta", {})
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta":
                i = self._tools.get(ev.get("index", 0), 0)
                return self._chunk(
                    {
                        "tool_calls": [
                            {"index": i, "function": {"arguments": delta.get("partial_json", "")}}
                        ]
                    }
                )
            return b""
        if kind == "message_delta":
            out_tokens = (ev.get("usage") or {}).get("output_tokens", 0)
            pin = self._usage.get("prompt_tokens", 0)
            reason = (ev.get("delta") or {}).get("stop_reason") or "end_turn"
            return self._chunk(
                {},
                FINISH_REASONS.get(reason, "stop"),
                {
                    "prompt_tokens": pin,
                    "completion_tokens": out_tokens,
                    "total_tokens": pin + out_tokens,
                },
            )
        if kind == "message_stop":
            self.done = True
            return b"data: [DONE]\n\n"
        if kind == "error":
            err = ev.get("error") or {}
            self.done = True
            return (
                b"data: "
                + _encode(
                    {
                        "error": {
                            "message": err.get("message", "upstream error"),
                            "type": err.get("type", "upstream_error"),
                            "code": None,
                        }
                    }
                )
                + b"\n\ndata: [DONE]\n\n"
            )
        return b""  # ping, content_block_stop
