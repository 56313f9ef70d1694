"""Making Redis clients with timeouts that suit a config bus.

redis-py's defaults retry with multi-second backoffs; a replica or an admin would rather
fail fast and let its own loop (reconnect with jitter, circuit breaker) decide what next.
Plain `redis://`, TLS `rediss://`, AUTH and ACL users in the URL all work as redis-py reads
them.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

DEFAULT_SOCKET_TIMEOUT_S = 2.0
DEFAULT_CONNECT_TIMEOUT_S = 1.0


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
    return aioredis.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=connect_timeout_s,
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries),
        health_check_interval=health_check_interval_s,
        max_connections=max_connections,
    )
