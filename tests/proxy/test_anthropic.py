from __future__ import annotations

from typing import Any

import msgspec

from proxy.anthropic import StreamTranslator, error_to_openai, from_anthropic, to_anthropic


def sse(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(
        f"event: {n}\n".encode() + b"data: " + msgspec.json.encode(d) + b"\n\n" for n, d in events
    )


def chunks(out: bytes) -> list[Any]:
    datas = [line[6:] for line in out.split(b"\n") if line.startswith(b"data: ")]
    return [d if d == b"[DONE]" else msgspec.json.decode(d) for d in datas]


def test_request_system_params_and_stop() -> None:
    req = {
        "model": "public",
        "messages": [
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"},
        ],
        "temperature": 0.3,
        "top_p": 0.9,
        "stop": "END",
        "max_tokens": 50,
        "stream": True,
        "user": "u1",
    }
    out = to_anthropic(req, "claude-x")
    assert out == {
        "model": "claude-x",
        "system": "be brief",
        "max_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": True,
        "metadata": {"user_id": "u1"},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "hello"}]},
            {"role": "user", "content": [{"type": "text", "text": "more"}]},
        ],
    }


def test_request_defaults_max_tokens_and_maps_tools() -> None:
    req = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "get", "description": "d", "parameters": {"type": "object"}},
            }
        ],
        "tool_choice": "required",
    }
    out = to_anthropic(req, "c")
    assert out["max_tokens"] == 1024
    assert out["tools"] == [{"name": "get", "description": "d", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "any"}
    assert out["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "call_1", "name": "get", "input": {"city": "Oslo"}}],
    }
    assert out["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "rain"}],
    }


def test_response_text_tools_finish_reason_and_usage() -> None:
    resp = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [
            {"type": "text", "text": "a"},
            {"type": "text", "text": "b"},
            {"type": "tool_use", "id": "t1", "name": "f", "input": {"x": 1}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 7},
    }
    out = from_anthropic(resp)
    assert out["object"] == "chat.completion"
    assert out["model"] == "claude-x"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "ab"
    assert choice["message"]["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}}
    ]
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


def test_max_tokens_stop_reason_is_length() -> None:
    out = from_anthropic({"content": [], "stop_reason": "max_tokens"})
    assert out["choices"][0]["finish_reason"] == "length"
    assert out["choices"][0]["message"]["content"] is None


def test_stream_events_become_chunks_even_when_split_anywhere() -> None:
    events = sse(
        [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {"id": "msg_9", "model": "claude-x", "usage": {"input_tokens": 4}},
                },
            ),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            ("ping", {"type": "ping"}),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "Hel"},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "lo"},
                },
            ),
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "tool_use", "id": "t1", "name": "f"},
                },
            ),
            (
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": "{}"},
                },
            ),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn"},
                    "usage": {"output_tokens": 2},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
    )
    for step in (len(events), 7, 1):
        t = StreamTranslator()
        out = b"".join(t.feed(events[i : i + step]) for i in range(0, len(events), step))
        got = chunks(out)
        assert got[-1] == b"[DONE]"
        assert t.done
        assert all(
            c["id"] == "msg_9"
            and c["model"] == "claude-x"
            and c["object"] == "chat.completion.chunk"
            for c in got[:-1]
        )
        deltas = [c["choices"][0]["delta"] for c in got[:-1]]
        assert deltas[0] == {"role": "assistant", "content": ""}
        assert "".join(d.get("content", "") for d in deltas) == "Hello"
        assert deltas[3]["tool_calls"][0]["id"] == "t1"
        assert deltas[4]["tool_calls"][0]["function"]["arguments"] == "{}"
        last = got[-2]
        assert last["choices"][0]["finish_reason"] == "stop"
        assert last["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_stream_error_event_becomes_error_chunk_and_done() -> None:
    t = StreamTranslator()
    out = t.feed(
        sse(
            [("error", {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})]
        )
    )
    got = chunks(out)
    assert got[0] == {"error": {"message": "busy", "type": "overloaded_error", "code": None}}
    assert got[1] == b"[DONE]"


def test_error_body_is_translated_to_openai_shape() -> None:
    body = msgspec.json.encode(
        {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    )
    assert msgspec.json.decode(error_to_openai(400, body)) == {
        "error": {"message": "bad", "type": "invalid_request_error", "code": None}
    }
    assert msgspec.json.decode(error_to_openai(502, b"<html>")) == {
        "error": {"message": "upstream answered 502", "type": "upstream_error", "code": None}
    }


def test_stream_with_garbage_data_raises_decode_error_for_the_relay() -> None:
    import pytest

    with pytest.raises(msgspec.DecodeError):
        StreamTranslator().feed(b"event: x\ndata: {not json\n\n")


def test_request_shapes_the_messages_api_cannot_take_are_a_400_not_a_500() -> None:
    import pytest

    from proxy import errors
    from proxy.chat import parse_request

    for body, message in [
        (b'{"model": "m", "messages": ["hi"]}', "messages[0] must be an object"),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [1]}',
         "tools[0] must be an object"),
    ]:  # fmt: skip
        with pytest.raises(errors.ProxyError) as info:
            parse_request(body)
        assert info.value.status == 400 and message in str(info.value.message)
