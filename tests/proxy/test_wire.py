"""What a replica process puts on the wire for its hot endpoints (`proxy.fastlane`): whole
answers in one piece with a length, streams chunked, pipelined requests answered in order,
HTTP/1.0 and `connection: close` honoured, a client's unusable request id replaced."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from configbus.testing import SAMPLE_CLIENT_KEY
from tests.proxy.helpers import data_for
from tests.proxy.solo import Solo, http, solo
from tests.support import RedisServer

__all__ = ["http"]  # a fixture: imported for pytest

BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture(scope="module")
def env(redis_server: RedisServer) -> Iterator[Solo]:
    with solo(redis_server, "wire") as s:
        s.publish(data_for(s.a, s.b))
        yield s


def raw_request(body: bytes = BODY, *, version: str = "1.1", extra: str = "") -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/{version}\r\nhost: x\r\n"
        f"authorization: Bearer {SAMPLE_CLIENT_KEY}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def read_answers(sock: socket.socket, n: int) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """`n` answers framed by content-length or chunked encoding, as they arrived."""
    buf = b""
    out = []

    def fill() -> None:
        nonlocal buf
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"connection closed after {len(out)} answers: {buf!r}")
        buf += data

    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            fill()
        head, buf = buf.split(b"\r\n\r\n", 1)
        status, *lines = head.split(b"\r\n")
        headers = {k.lower(): v.strip() for k, v in (ln.split(b":", 1) for ln in lines)}
        if b"content-length" in headers:
            size = int(headers[b"content-length"])
            while len(buf) < size:
                fill()
            body, buf = buf[:size], buf[size:]
        else:
            assert headers.get(b"transfer-encoding") == b"chunked"
            body = b""
            while True:
                while b"\r\n" not in buf:
                    fill()
                size_line, buf = buf.split(b"\r\n", 1)
                size = int(size_line, 16)
                while len(buf) < size + 2:
                    fill()
                body, buf = body + buf[:size], buf[size + 2 :]
                if size == 0:
                    break
        out.append((status, headers, body))
    return out


def connect(env: Solo) -> socket.socket:
    host, port = env.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def test_pipelined_requests_answered_in_order_each_with_a_length(
    env: Solo, http: httpx.Client
) -> None:
    with connect(env) as s:
        bad = raw_request(b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}')
        s.sendall(raw_request() + bad + raw_request(extra="x-request-id: mine-1\r\n"))
        answers = read_answers(s, 3)
    assert [a[0].split(b" ")[1] for a in answers] == [b"200", b"404", b"200"]
    for _, headers, body in answers:
        assert int(headers[b"content-length"]) == len(body)
        assert b"transfer-encoding" not in headers and headers[b"date"]
    assert json.loads(answers[1][2])["error"]["code"] == "model_not_found"
    assert answers[2][1][b"x-request-id"] == b"mine-1"


def test_stream_is_chunked_and_the_connection_kept(env: Solo, http: httpx.Client) -> None:
    stream = json.dumps(
        {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    with connect(env) as s:
        s.sendall(raw_request(stream))
        [(status, headers, body)] = read_answers(s, 1)
        assert status.split(b" ")[1] == b"200"
        assert headers[b"content-type"].startswith(b"text/event-stream")
        assert body.count(b"data: ") >= 3 and body.endswith(b"data: [DONE]\n\n")
        s.sendall(raw_request())  # the same connection serves the next request
        [(status, _, _)] = read_answers(s, 1)
        assert status.split(b" ")[1] == b"200"


@pytest.mark.parametrize(
    ("version", "extra"), [("1.0", ""), ("1.1", "connection: close\r\n")], ids=["http10", "close"]
)
def test_connection_closed_when_the_client_asks(
    env: Solo, http: httpx.Client, version: str, extra: str
) -> None:
    with connect(env) as s:
        s.sendall(raw_request(version=version, extra=extra))
        [(status, headers, _)] = read_answers(s, 1)
        assert status.split(b" ")[1] == b"200" and headers[b"connection"] == b"close"
        assert s.recv(1) == b""  # closed by the replica


def test_unusable_request_id_replaced(env: Solo, http: httpx.Client) -> None:
    with connect(env) as s:
        s.sendall(raw_request(extra="x-request-id: caf\u00e9 au lait\r\n"))
        [(status, headers, _)] = read_answers(s, 1)
    assert status.split(b" ")[1] == b"200"
    assert not headers[b"x-request-id"].startswith(b"caf") and headers[b"x-request-id"].isascii()
