"""`CONFIGBUS_REDIS_READ_URL=replicas` with a Sentinel URL: a replica reads and listens
through the replica the sentinels name, writes to the primary, and reaches head through the
primary when that replica stops answering."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import redis

from configbus.codec import decode_body
from configbus.connection import connect, connect_read
from configbus.document import Document
from configbus.errors import SettingsError
from configbus.settings import BusSettings
from configbus.store import Store
from configbus.watcher import Watcher
from tests.core.helpers import body
from tests.core.test_watcher import RECONCILE_S, settings, stack, until
from tests.failover.sentinels import SentinelSet

__all__ = ["stack"]  # a fixture: imported for pytest

pytestmark = pytest.mark.slow


def ro_reads(port: int) -> int:
    """Read-only script calls a server has run: a watcher's reads."""
    with redis.Redis(port=port, socket_timeout=1) as c:
        stats = c.info("commandstats")
    return int(stats.get("cmdstat_evalsha_ro", {}).get("calls", 0))


def subscribers(port: int) -> int:
    with redis.Redis(port=port, socket_timeout=1) as c:
        return len(c.client_list(_type="pubsub"))


async def test_a_watcher_reads_through_the_replica_sentinel_names(
    sentinels: SentinelSet, namespace: str, stack: AsyncExitStack
) -> None:
    url = sentinels.url()
    # Hints without bodies, so every publish costs the watcher a read we can see.
    pub = Store(connect(url), namespace, inline_max_bytes=0)
    stack.push_async_callback(pub.redis.aclose)
    await pub.publish(body(1))
    primary = connect(url)
    reads = connect_read("replicas", "r1", url)
    assert reads is not None
    stack.push_async_callback(primary.aclose)
    stack.push_async_callback(reads.aclose)
    w: Watcher[Document, Document] = Watcher(
        Store(primary, namespace),
        decode=decode_body,
        settings=settings(namespace, url, replica_id="r1"),
        reads=Store(reads, namespace),
    )
    await stack.enter_async_context(w)
    await until(lambda: w.current is not None and w.current.version == 1, 10, "v1")
    a, b = sentinels.a.port, sentinels.b.port
    before_a, before_b = ro_reads(a), ro_reads(b)
    for n in range(2, 6):
        await pub.publish(body(n))
        await until(lambda n=n: w.current is not None and w.current.version == n, 5, f"v{n}")
    on_replica, on_primary = ro_reads(b) - before_b, ro_reads(a) - before_a
    # Read on the replica the sentinel named; the primary answers only when that replica
    # lags behind a hint (replication is asynchronous: rare, not never).
    assert on_replica >= 4 and on_primary < on_replica, (on_replica, on_primary)
    assert subscribers(b) >= 1  # and listened there

    # The replica stops answering: the watcher reaches head through the primary.
    sentinels.b.pause()
    try:
        await pub.publish(body(6))
        await until(
            lambda: w.current is not None and w.current.version == 6,
            RECONCILE_S + 3,
            "v6 through the primary",
        )
    finally:
        sentinels.b.resume()


def test_replicas_needs_a_url_that_can_name_them() -> None:
    with pytest.raises(SettingsError, match="redis\\+sentinel"):
        BusSettings(redis_url="redis://127.0.0.1:6379/0", redis_read_url="replicas").check()
    BusSettings(
        redis_url="redis+sentinel://127.0.0.1:26379/cb/0", redis_read_url="replicas"
    ).check()
