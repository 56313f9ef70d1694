"""One connection kept out of a client's pool for one caller's frequent, single commands.

A replica's status report is one HSET a few times a second, in a process whose event loop
also serves requests. Through the client's `execute_command` it pays the pool (a lock, a
liveness probe of the socket on every checkout, the retry wrapper) on every call: at K =
1,000 watchers in `bench/propagation.py` that was about 40 µs of a report's ~140 µs of
CPU. A pinned connection sends the packed command and reads its reply, nothing else.

It stays in the pool's in-use set, so closing the client closes it too. It follows the
client where the client moves: a Sentinel client's pool that learns of a new primary
(`configbus.connection.SentinelRedis.follow_primary`, asked before each call) makes it
reconnect there, since a demoted primary may take writes for seconds and lose them. Any
error drops it (the next call connects again, to whatever is primary by then). A
connection found closed (the server restarted, or Sentinel dropped a demoted primary's
clients) is replaced and the command sent once more at once, as the client's own retry
does; other errors reach the caller as they would from the client. So: for idempotent
commands only. A client without a connection pool (a cluster client) is called as usual.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError


class PinnedConnection:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pool = getattr(redis, "connection_pool", None)
        self._conn: AbstractConnection | None = None
        self._lock = asyncio.Lock()  # one command in flight: replies come back in order
        self._follow = getattr(redis, "follow_primary", None)

    async def call(self, *args: Any) -> Any:
        if self._pool is None:
            return await self._redis.execute_command(*args)  # type: ignore[no-untyped-call]
        async with self._lock:
            try:
                return await self._call(args)
            except RedisConnectionError:
                return await self._call(args)

    async def _call(self, args: tuple[Any, ...]) -> Any:
        assert self._pool is not None
        if self._follow is not None:
            await self._follow()
        conn = self._conn
        if conn is not None and _moved(self._pool, conn):
            self._conn = None
            await conn.disconnect()
            await self._pool.release(conn)
            conn = None
        if conn is None:
            conn = self._conn = await self._pool.get_connection()
        try:
            await conn.send_packed_command(conn.pack_command(*args), check_health=False)
            return await conn.read_response()
        except BaseException:
            # A reply may still be on its way (a timeout, a cancellation): never reuse it.
            self._conn = None
            await conn.disconnect(nowait=True)
            await self._pool.release(conn)
            raise


def _moved(pool: Any, conn: AbstractConnection) -> bool:
    """The pool now points at another primary than `conn` is connected to (Sentinel)."""
    primary = getattr(pool, "master_address", None) if getattr(pool, "is_master", False) else None
    where = (getattr(conn, "host", None), getattr(conn, "port", None))
    return primary is not None and tuple(primary) != where
