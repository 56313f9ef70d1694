from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.failover.sentinels import SentinelSet


@pytest.fixture
def sentinels() -> Iterator[SentinelSet]:
    """A primary, its replica and a sentinel watching them, for one test."""
    ss = SentinelSet().start()
    yield ss
    ss.cleanup()
