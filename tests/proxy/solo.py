"""One replica and two mock upstreams on a namespace of their own, for a test module."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from configbus.testing import SAMPLE_CLIENT_KEY
from tests.proxy.helpers import Mock, Replica, publish, running
from tests.support import RedisServer, wait_for


class Solo:
    def __init__(self, redis: RedisServer, namespace: str, **env: str) -> None:
        self.redis_url = redis.url
        self.namespace = namespace
        self.a, self.b = Mock("A"), Mock("B")
        self.replica = Replica(redis.url, namespace, replica_id=f"{namespace}-r", env=env)
        self.url = self.replica.url

    def publish(self, data: dict[str, Any]) -> int:
        v = publish(self.redis_url, self.namespace, data)
        wait_for(lambda: self.replica.version() == v, timeout=5, what=f"replica on {v}")
        return v

    def reset(self) -> None:
        for m in (self.a, self.b):
            m.control(fail_rate=0.0, status=500, latency_ms=0, stream_chunks=3, usage_tokens=0)

    def post(
        self, http: httpx.Client, path: str, body: dict[str, Any], **headers: str
    ) -> httpx.Response:
        return http.post(
            self.url + path,
            json=body,
            headers={"authorization": f"Bearer {SAMPLE_CLIENT_KEY}", **headers},
        )


@contextmanager
def solo(redis: RedisServer, namespace: str, **env: str) -> Iterator[Solo]:
    s = Solo(redis, namespace, **env)
    with running(s.a, s.b, s.replica):
        yield s


@pytest.fixture
def http(env: Solo) -> Iterator[httpx.Client]:
    """A client for a module's `env` (a Solo fixture), its mocks reset first."""
    env.reset()
    with httpx.Client(timeout=10) as c:
        yield c
