"""Issue 19: header count, header size and slow headers or bodies are refused and the
connection closed, on both services, as `configbus admin` and `configbus proxy` run them
(real uvicorn processes, raw sockets)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from tests.admin.helpers import SECRET_KEY, TOKENS_ENV
from tests.support import RedisServer, Service, configbus_cmd, free_port

LIMITS = ["--header-timeout", "1", "--body-timeout", "1"]


@pytest.fixture(scope="module")
def services(redis_server: RedisServer) -> Iterator[dict[str, int]]:
    ports = {"admin": free_port(), "proxy": free_port()}
    env = {
        "CONFIGBUS_REDIS_URL": redis_server.url,
        "CONFIGBUS_ADMIN_TOKENS": TOKENS_ENV,
        "CONFIGBUS_SECRET_KEYS": SECRET_KEY,
        "CONFIGBUS_NAMESPACE": "http-limits",
    }
    admin = Service(
        configbus_cmd("admin", "--port", str(ports["admin"]), "--log-level", "warning", *LIMITS),
        env=env,
        name="admin",
    ).start()
    proxy = Service(
        configbus_cmd("proxy", "--port", str(ports["proxy"]), *LIMITS), env=env, name="proxy"
    ).start()
    try:
        admin.wait_http(f"http://127.0.0.1:{ports['admin']}/health/live")
        proxy.wait_http(f"http://127.0.0.1:{ports['proxy']}/health/live")
        yield ports
    finally:
        admin.stop()
        proxy.stop()


def _exchange(
    port: int, chunks: list[bytes], *, pause_s: float = 0.0, wait_s: float = 5.0
) -> tuple[bytes, float]:
    """Send `chunks` (pausing between them), then read until the server closes; the answer
    and how long the connection lived."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait_s) as s:
        try:
            for chunk in chunks:
                s.sendall(chunk)
                if pause_s:
                    time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us mid-send: what a refusal looks like from here
        answer = b""
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, time.monotonic() - started


HEAD = b"GET /health/live HTTP/1.1\r\nHost: x\r\n"


@pytest.mark.parametrize("service", ["admin", "proxy"])
def test_twenty_thousand_headers_are_refused(services: dict[str, int], service: str) -> None:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(20_000))
    answer, lived = _exchange(services[service], [HEAD + many + b"\r\n"])
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert lived < 5


@pytest.mark.parametrize("service", ["admin", "proxy"])
def test_a_ten_megabyte_header_is_refused(services: dict[str, int], service: str) -> None:
    big = b"X-Big: " + b"a" * (10 * 1024 * 1024) + b"\r\n\r\n"
    answer, lived = _exchange(services[service], [HEAD, big])
    assert answer.startswith(b"HTTP/1.1 431") or answer == b"", answer[:200]
    assert lived < 5


@pytest.mark.parametrize("service", ["admin", "proxy"])
def test_slow_headers_are_cut_off(services: dict[str, int], service: str) -> None:
    drip = [HEAD] + [b"X-Slow-%d: v\r\n" % i for i in range(8)]
    answer, lived = _exchange(services[service], drip, pause_s=0.5, wait_s=10)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert lived < 6  # 8 x 0.5 s of dripping would take 4 s more than the 1 s allowed


@pytest.mark.parametrize("service", ["admin", "proxy"])
def test_a_slow_body_is_cut_off(services: dict[str, int], service: str) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    answer, lived = _exchange(services[service], [head, b"{"], wait_s=10)
    # The proxy answers 503 (no config yet) without reading the body, the admin a 404 or 408:
    # either way the connection does not outlive the body timeout.
    assert lived < 5 and (answer == b"" or answer.startswith(b"HTTP/1.1 ")), answer[:200]


@pytest.mark.parametrize("service", ["admin", "proxy"])
def test_an_ordinary_request_still_works(services: dict[str, int], service: str) -> None:
    answer, _ = _exchange(services[service], [HEAD + b"Connection: close\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
