"""The document's `logging.level` governs every logger of the replica, applied on each swap."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from configbus.connection import connect
from configbus.settings import BusSettings
from configbus.store import Store
from configbus.testing import sample_data
from proxy.app import create_app
from tests.proxy.helpers import SECRET_KEY, encode
from tests.support import RedisServer

# Loggers the replica's code and its server log to, children included.
SEEN = (
    "configbus",
    "configbus.watcher",
    "configbus.counters",
    "proxy",
    "proxy.chat",
    "proxy.limits",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
)


@pytest.fixture
def keep_levels() -> Iterator[None]:
    """Logger levels are process-wide: put them back for the tests that follow."""
    before = {name: logging.getLogger(name).level for name in SEEN}
    yield
    for name, level in before.items():
        logging.getLogger(name).setLevel(level)


def levels() -> set[str]:
    return {logging.getLevelName(logging.getLogger(n).getEffectiveLevel()) for n in SEEN}


@pytest.mark.usefixtures("keep_levels")
async def test_each_applied_version_sets_the_level_of_every_replica_logger(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    # As `configbus proxy --log-level warning` leaves uvicorn's loggers before any config.
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    app = create_app(
        BusSettings(
            redis_url=redis_server.url,
            namespace=namespace,
            secret_keys=(SECRET_KEY,),
            replica_id="logging-r1",
            snapshot_path=tmp_path / "snapshot.json",
        )
    )
    redis = connect(redis_server.url)
    store = Store(redis, namespace)
    try:
        async with app.router.lifespan_context(app) as state:
            assert state is not None
            watcher = state["watcher"]
            for level in ("DEBUG", "ERROR", "INFO"):
                data = sample_data()
                data["logging"] = {"level": level}
                v = (await store.publish(encode(data), author="test")).version
                async with asyncio.timeout(10):
                    await watcher.wait_for(lambda c, v=v: c is not None and c.version == v)
                assert levels() == {level}
    finally:
        await redis.aclose()
