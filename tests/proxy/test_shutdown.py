"""SIGTERM on a replica: no new requests, those in flight (streams too) finish, then exit."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from tests.proxy.helpers import AUTH, CHAT, Mock, Replica, data_for, publish, running
from tests.support import RedisServer, wait_for

pytestmark = pytest.mark.slow


def test_sigterm_finishes_the_stream_in_flight_then_exits(
    redis_server: RedisServer, namespace: str
) -> None:
    a, b = Mock("A"), Mock("B")
    replica = Replica(redis_server.url, namespace, replica_id="r-shutdown")
    with running(a, b, replica):
        publish(redis_server.url, namespace, data_for(a, b))
        replica.service.wait_http(replica.url + "/health/ready")
        a.control(stream_chunks=6, chunk_delay_ms=250)  # a 1.5 s stream

        events: list[str] = []
        first = threading.Event()

        def stream() -> None:
            with (
                httpx.Client(timeout=10) as client,
                client.stream(
                    "POST", replica.url + "/v1/chat/completions",
                    json={**CHAT, "stream": True}, headers=AUTH,
                ) as r,
            ):  # fmt: skip
                events.append(f"status {r.status_code}")
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line)
                        first.set()

        t = threading.Thread(target=stream)
        t.start()
        assert first.wait(5), events
        proc = replica.service.proc
        assert proc is not None
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)

        # New connections are refused while the stream drains.
        def refused() -> bool:
            try:
                httpx.get(replica.url + "/health/live", timeout=0.5)
            except httpx.ConnectError:
                return True
            return False

        wait_for(refused, timeout=2, what="listener closed after SIGTERM")
        assert proc.poll() is None  # still draining the stream
        t.join(10)
        # uvicorn re-raises SIGTERM once drained: the conventional exit for a terminated process.
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
        assert events[0] == "status 200"
        assert events[-1] == "data: [DONE]", events
        assert sum(e.startswith("data: {") for e in events) >= 6, events  # every chunk arrived
        assert time.monotonic() - stopped_at >= 0.5  # it waited for the stream
