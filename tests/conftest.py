from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest

from tests.support import RedisServer

_ns = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session; tests isolate by namespace."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for one test that kills, pauses or restarts it."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> str:
    return f"t{next(_ns)}-" + re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name[:40])
