"""One connection kept out of a client's pool for one caller's frequent, small writes.

A replica's status report is one HSET a few times a second, in a process whose event loop
also serves requests. Through the client's `execute_command` it pays the pool (a lock, a
liveness probe of the socket on every checkout, the retry wrapper) on every call: at K =
1,000 watchers in `bench/propagation.py` that was about 40 µs of a report's ~140 µs of
CPU. A pinned connection sends the commands in one write, packed here (redis-py's packer
was another quarter of a report's CPU), and reads their replies, nothing else.

It stays in the pool's in-use set, so closing the client closes it too. It follows the
client where the client moves: a Sentinel client's pool that learns of a new primary
(`configbus.connection.SentinelRedis.follow_primary`, asked before each call) makes it
reconnect there, since a demoted primary may take writes for seconds and lose them. Any
error but a key's wrong type or a refused permission drops it (the next call connects
again, to whatever is primary by then). A connection found closed (the server restarted,
or Sentinel dropped a demoted primary's clients) is replaced and the commands sent once
more at once, as the client's own retry does; other errors reach the caller as they would
from the client. So: for idempotent commands only. A client without a connection pool (a
cluster client) is called as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError, ResponseError


class PinnedConnection:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._pool = getattr(redis, "connection_pool", None)
        self._conn: AbstractConnection | None = None
        self._lock = asyncio.Lock()  # one command in flight: replies come back in order
        self._follow = getattr(redis, "follow_primary", None)

    async def call_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send `commands` in one write, in order, and read their replies; an error reply
        is returned in its place (a ResponseError) and, unless about a key's type or a
        permission, drops the connection once all are read. A lost connection or a
        timeout raises."""
        if self._pool is None:
            return [await self._one(c) for c in commands]
        async with self._lock:
            try:
                return await self._call(commands)
            except RedisConnectionError:
                return await self._call(commands)

    async def _call(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        assert self._pool is not None
        if self._follow is not None:
            await self._follow()
        conn = self._conn
        if conn is not None and _moved(self._pool, conn):
            await self._drop(conn)
            conn = None
        if conn is None:
            conn = self._conn = await self._pool.get_connection()
        try:
            await conn.send_packed_command(pack(commands), check_health=False)
            replies = [await _reply(conn) for _ in commands]
        except BaseException:
            # A reply may still be on its way (a timeout, a cancellation): never reuse it.
            await self._drop(conn, nowait=True)
            raise
        if any(_about_the_server(r) for r in replies):
            # A demoted primary answers READONLY: the next call connects anew.
            await self._drop(conn)
        return replies

    async def _drop(self, conn: AbstractConnection, *, nowait: bool = False) -> None:
        assert self._pool is not None
        self._conn = None
        await conn.disconnect(nowait=nowait)
        await self._pool.release(conn)

    async def _one(self, command: Sequence[Any]) -> Any:
        try:
            return await self._redis.execute_command(*command)  # type: ignore[no-untyped-call]
        except ResponseError as exc:
            return exc


def pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """`commands` in RESP, as one buffer: what `pack_commands` does for any argument, for
    the few kinds a report carries (bytes, str, int, float) at a tenth of its cost."""
    out = bytearray()
    for command in commands:
        out += b"*%d\r\n" % len(command)
        for arg in command:
            if isinstance(arg, str):
                arg = arg.encode()
            elif isinstance(arg, int | float) and not isinstance(arg, bool):
                arg = repr(arg).encode()
            elif not isinstance(arg, bytes):
                raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
            out += b"$%d\r\n%b\r\n" % (len(arg), arg)
    return bytes(out)


def _about_the_server(reply: Any) -> bool:
    """An error reply that may be about the server (READONLY, LOADING, ...), not about a
    key (WRONGTYPE: damaged) or a permission (NOPERM), after which the connection is fine."""
    return (
        isinstance(reply, ResponseError)
        and not isinstance(reply, NoPermissionError)
        and not str(reply).startswith("WRONGTYPE")
    )


async def _reply(conn: AbstractConnection) -> Any:
    try:
        return await conn.read_response()
    except ResponseError as exc:  # the whole error reply was read: the next one follows
        return exc


def _moved(pool: Any, conn: AbstractConnection) -> bool:
    """The pool now points at another primary than `conn` is connected to (Sentinel)."""
    primary = getattr(pool, "master_address", None) if getattr(pool, "is_master", False) else None
    where = (getattr(conn, "host", None), getattr(conn, "port", None))
    return primary is not None and tuple(primary) != where
