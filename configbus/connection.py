"""Making Redis clients with timeouts that suit a config bus.

redis-py's defaults retry with multi-second backoffs; a replica or an admin would rather
fail fast and let its own loop (reconnect with jitter, circuit breaker) decide what next.
Plain `redis://`, TLS `rediss://`, AUTH and ACL users in the URL all work as redis-py reads
them. `?cluster=true` in the URL makes a Redis Cluster client: every key of a namespace
shares one hash tag, so the store's scripts and the change channel work unchanged there.

`redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]` (`rediss+sentinel://`
for TLS to the sentinels and the Redis servers) asks the sentinels where `service`'s primary
is. Every new connection asks again, and a connection to a primary that was demoted fails
(redis-py turns its READONLY into a connection error), so after a failover each caller's
next attempt (a watcher's reconnect, the channel's resubscribe, the admin's next request)
lands on the new primary. The credentials are the Redis servers'; the sentinels are asked
without them.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

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
    if url.startswith(SENTINEL_SCHEMES):
        if cluster:
            raise ValueError("a sentinel URL cannot also be ?cluster=true")
        return _sentinel_client(
            parse_sentinel_url(url),
            health_check_interval=health_check_interval_s,
            max_connections=max_connections,
            **options,
        )
    if cluster:
        # Typed as Redis for callers: the commands configbus uses behave the same.
        return RedisCluster.from_url(url, **options)  # type: ignore[return-value]
    return aioredis.Redis.from_url(
        url,
        health_check_interval=health_check_interval_s,
        max_connections=max_connections,
        **options,
    )


SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")


class SentinelURL(msgspec.Struct, frozen=True, kw_only=True):
    """`redis+sentinel://[user:password@]host:port[,host:port...]/service[/db][?query]`."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    tls: bool = False
    # What redis-py reads from the equivalent `redis://` URL (credentials, db, TLS query).
    options: dict[str, Any] = {}


def parse_sentinel_url(url: str) -> SentinelURL:
    """The parts of a sentinel URL; ValueError naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis+sentinel", "rediss+sentinel"):
        raise ValueError(f"{scheme!r}: not a redis+sentinel:// or rediss+sentinel:// URL")
    tls = scheme == "rediss+sentinel"
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, _, hosts = netloc.rpartition("@")
    sentinels = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"sentinel {item.strip()!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise ValueError("the path must be /service_name or /service_name/db")
    service = unquote(parts[0])
    db = parts[1] if len(parts) == 2 else "0"
    if not db.isdigit():
        raise ValueError(f"db {db!r} is not a number")
    # redis-py parses credentials, the db and TLS options from an equivalent plain URL.
    plain = f"{'rediss' if tls else 'redis'}://{userinfo + '@' if userinfo else ''}h/{db}"
    options: dict[str, Any] = dict(parse_url(plain + (f"?{query}" if query else "")))
    for key in ("host", "port", "connection_class"):
        options.pop(key, None)
    return SentinelURL(
        sentinels=tuple(sentinels), service=service, db=int(db), tls=tls, options=options
    )


# How often a sentinel client asks the sentinels where the primary is while it is in use.
FOLLOW_INTERVAL_S = 0.5


class SentinelReadRedis(aioredis.Redis):
    """A client of a sentinel-managed service's replicas (one picked per connection, the
    primary when none is up); it closes its sentinel clients with itself."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinels is not None:
            await self.sentinels.aclose()


class SentinelRedis(SentinelReadRedis):
    """A client of a sentinel-managed primary: it closes its sentinel clients with itself,
    and asks the sentinels where the primary is at most every `FOLLOW_INTERVAL_S` while in
    use. redis-py asks only when it opens a connection, and Sentinel demotes the old primary
    only when it next checks on it (seconds later): until then pooled connections would keep
    writing to the old primary, and those writes are lost. When the answer changes, the pool
    drops its idle connections at once and the busy ones when they come back."""

    _asked_at = 0.0

    async def follow_primary(self) -> None:
        """Ask the sentinels where the primary is, at most every `FOLLOW_INTERVAL_S`; a
        connection held outside the pool (`configbus.pinned`) calls it too."""
        now = time.monotonic()
        if now - self._asked_at >= FOLLOW_INTERVAL_S:
            self._asked_at = now
            try:
                await self.connection_pool.get_master_address()  # type: ignore[attr-defined]
            except (RedisConnectionError, RedisTimeoutError):
                pass  # no sentinel answers: the command goes where the pool already points

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        await self.follow_primary()
        return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


def _sentinel_client(
    parsed: SentinelURL, *, replicas: bool = False, **options: Any
) -> aioredis.Redis:
    ssl = {k: v for k, v in parsed.options.items() if k.startswith("ssl")}
    sentinel_options = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        # redis-py's default retries a dead sentinel with second-long backoffs before it
        # asks the next one: ask each once, the list is the retry.
        "retry": Retry(NoBackoff(), 0),
        **({"ssl": True, **ssl} if parsed.tls else {}),
    }
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    kwargs = {**parsed.options, **({"ssl": True} if parsed.tls else {}), **options}
    client: SentinelReadRedis
    if replicas:
        client = sentinel.slave_for(parsed.service, redis_class=SentinelReadRedis, **kwargs)
    else:
        client = sentinel.master_for(parsed.service, redis_class=SentinelRedis, **kwargs)
    client.sentinels = sentinel
    return client


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


# `CONFIGBUS_REDIS_READ_URL=replicas`: the primary's own replicas, as Sentinel or the
# Cluster knows them, instead of a list of URLs.
DISCOVER_REPLICAS = "replicas"


def connect_read(urls: str, replica_id: str, primary_url: str = "") -> aioredis.Redis | None:
    """A client for this replica's read replica, None when there is none. `urls` is a
    comma-separated list (one is picked by `replica_id`), or `replicas`: those of
    `primary_url`'s primary, asked of its sentinels (a `redis+sentinel://` URL: a replica
    per connection, the primary when none is up) or its cluster (`?cluster=true`: reads
    routed to the slots' replicas)."""
    if urls.strip() == DISCOVER_REPLICAS:
        return _discovered(primary_url)
    url = pick_read_url(urls, replica_id)
    if url is None:
        return None
    return connect(
        url, socket_timeout_s=READ_REPLICA_TIMEOUT_S, connect_timeout_s=READ_REPLICA_TIMEOUT_S
    )


def _discovered(primary_url: str) -> aioredis.Redis:
    url, cluster = _split_cluster_flag(primary_url)
    options: dict[str, Any] = {
        "socket_timeout": READ_REPLICA_TIMEOUT_S,
        "socket_connect_timeout": READ_REPLICA_TIMEOUT_S,
        "retry": Retry(NoBackoff(), 0),
    }
    if url.startswith(SENTINEL_SCHEMES):
        return _sentinel_client(parse_sentinel_url(url), replicas=True, **options)
    if cluster:
        return RedisCluster.from_url(url, read_from_replicas=True, **options)  # type: ignore[return-value]
    raise ValueError(
        f"CONFIGBUS_REDIS_READ_URL={DISCOVER_REPLICAS} needs a CONFIGBUS_REDIS_URL that can "
        "name its replicas: redis+sentinel://... or ?cluster=true"
    )
