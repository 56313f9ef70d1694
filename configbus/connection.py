"""Making Redis clients with timeouts that suit a config bus.

redis-py's defaults retry with multi-second backoffs; a replica or an admin would rather
fail fast and let its own loop (reconnect with jitter, circuit breaker) decide what next.
Plain `redis://`, TLS `rediss://`, AUTH and ACL users in the URL all work as redis-py reads
them. `?cluster=true` in the URL makes a Redis Cluster client: every key of a namespace
shares one hash tag, so the store's scripts and the change channel work unchanged there.
"""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

DEFAULT_SOCKET_TIMEOUT_S = 2.0
DEFAULT_CONNECT_TIMEOUT_S = 1.0
# Reads from a read replica give up sooner: the primary is there to answer instead.
READ_REPLICA_TIMEOUT_S = 0.5


def connect(
    url: str,
    *,
    socket_timeout_s: float | None = DEFAULT_SOCKET_TIMEOUT_S,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    retries: int = 1,
    health_check_interval_s: int = 0,
    max_connections: int | None = None,
) -> aioredis.Redis:
    """A client for `url` that gives up in about `connect_timeout_s` when Redis is down."""
    url, cluster = _split_cluster_flag(url)
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries),
    }
    if cluster:
        # Typed as Redis for callers: the commands configbus uses behave the same.
        return RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return aioredis.Redis.from_url(
        url,
        health_check_interval=health_check_interval_s,
        max_connections=max_connections,
        **options,
    )


def _split_cluster_flag(url: str) -> tuple[str, bool]:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flags = [v for k, v in query if k == "cluster"]
    if not flags:
        return url, False
    rest = urlencode([(k, v) for k, v in query if k != "cluster"])
    return urlunsplit(parts._replace(query=rest)), flags[-1].lower() in ("1", "true", "yes")


def pick_read_url(urls: str, replica_id: str) -> str | None:
    """The read replica (from a comma-separated list) a replica reads from: the same one
    for the same id, so a fleet spreads evenly and a restart keeps its place."""
    choices = [u.strip() for u in urls.split(",") if u.strip()]
    if not choices:
        return None
    digest = hashlib.sha256(replica_id.encode()).digest()
    return choices[int.from_bytes(digest[:8], "big") % len(choices)]


def connect_read(urls: str, replica_id: str) -> aioredis.Redis | None:
    """A client for this replica's read replica, None when there is none."""
    url = pick_read_url(urls, replica_id)
    if url is None:
        return None
    return connect(
        url, socket_timeout_s=READ_REPLICA_TIMEOUT_S, connect_timeout_s=READ_REPLICA_TIMEOUT_S
    )
