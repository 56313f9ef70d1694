"""Fleet counters: hits counted in Redis, so every process counting a key shares one count.

One Lua script counts a batch of hits in fixed windows: each hit INCRements its key, and
the first hit of a window sets the key's expiry, so a window starts at its key's first hit
and the key vanishes when it ends. Each hit answers a `Tally`: (hits so far in the window,
ms until the window ends). The admin's publish limit and the proxy's client limits are
both such windows; the caller decides what a count means.

Keys (`counter_key`) sit under a hash tag, `cb:{<scope>}:rl:<kind>:<name>`: the scope is
the namespace, so a Redis Cluster keeps its counters on the namespace's slot, or `_` for
counters outside any namespace (no namespace can be named so). One counter's keys must
share a slot, since one script call counts a whole batch of them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from configbus.store import REDIS_ERRORS, store_error

log = logging.getLogger("configbus.counters")

Tally = tuple[int, int]
"""(hits so far in the window, including this one; ms until the window ends)"""

# KEYS: one per hit (a key may repeat: each occurrence is one hit); ARGV: window ms.
# Returns {count, ttl_ms} per key, flattened, in KEYS order.
FIXED_WINDOW = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, ARGV[1])
    ttl = tonumber(ARGV[1])
  end
  out[2 * i - 1] = n
  out[2 * i] = ttl
end
return out
"""

_Pending = list[tuple[str, "asyncio.Future[Tally | None]"]]


# The scope of counters outside any namespace: the namespace rule refuses this name.
GLOBAL_SCOPE = "_"


def counter_key(kind: str, name: str, *, namespace: str = GLOBAL_SCOPE) -> str:
    """The Redis key counting `name` (a client, a token...) of `kind`."""
    return f"cb:{{{namespace}}}:rl:{kind}:{name}"


class FleetCounter:
    """Fixed-window counters in Redis, `window_s` long, shared by every process.

    It talks over one dedicated connection (made from the client's pool settings, so AUTH,
    TLS and unix sockets work) with at most one script call in flight: hits that arrive
    while a call is out go together in the next call. At low load a hit costs one round
    trip with no extra hop; under load one call serves a whole batch. A call that takes
    longer than `timeout_s` fails; every failure is a `StoreError` (`StoreUnavailable`
    when Redis cannot serve), raised to each hit of the batch.
    """

    def __init__(self, redis: aioredis.Redis, *, window_s: float, timeout_s: float) -> None:
        self.redis = redis
        self.window_ms = int(window_s * 1000)
        self.timeout_s = timeout_s
        self._sha: str | None = None
        self._pending: _Pending = []
        self._sending = False
        self._failure: BaseException = ConnectionError("no call yet")
        self._conn: Any = None
        self._cluster_script: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def count(self, key: str) -> Tally:
        """Count one hit on `key`."""
        fut: asyncio.Future[Tally | None] = asyncio.get_running_loop().create_future()
        self._pending.append((key, fut))
        if not self._sending:
            await self._pump()
        tally = await fut
        if tally is None:
            raise store_error(self._failure, "fleet counter") from None
        return tally

    async def _pump(self) -> None:
        """Send one batch; hand any hits that queued meanwhile to a task of their own."""
        self._sending = True
        batch, self._pending = self._pending, []
        try:
            await self._send(batch)
        finally:
            for _, fut in batch:  # only left undone if we were cancelled mid-call
                if not fut.done():
                    self._failure = ConnectionError("call cancelled before Redis answered")
                    fut.set_result(None)
            self._sending = False
            if self._pending:
                self._sending = True
                t = asyncio.get_running_loop().create_task(self._pump_later())
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)

    async def _pump_later(self) -> None:
        self._sending = False
        await self._pump()

    async def _send(self, batch: _Pending) -> None:
        try:
            res = await self._call([key for key, _ in batch])
        except REDIS_ERRORS as exc:  # TimeoutError included (an OSError)
            await self._reset()
            self._failure = exc
            for _, fut in batch:
                fut.set_result(None)
            return
        except BaseException:
            await self._reset()  # a reply may still be on its way: the stream is unusable
            raise
        for i, (_, fut) in enumerate(batch):
            if not fut.done():
                fut.set_result((int(res[2 * i]), int(res[2 * i + 1])))

    async def _command(self, *args: Any) -> Any:
        conn: Any = self._conn
        if conn is None:
            pool = self.redis.connection_pool
            # Timeouts are applied per call below; no per-write wait_for inside redis-py.
            conn = self._conn = pool.connection_class(
                **{**pool.connection_kwargs, "socket_timeout": None}
            )
            # The handshake (HELLO, AUTH, SELECT) reads replies too: bound it, or a Redis that
            # accepts connections but does not answer (paused) would hold every hit queued.
            # Any failure drops the connection (_reset), so a kept one is always connected.
            async with asyncio.timeout(self.timeout_s):
                await conn.connect()
        await conn.send_packed_command(conn.pack_command(*args), check_health=False)
        reply = await conn.read_response(timeout=self.timeout_s)
        if reply is None:
            # redis-py answers None (not an error) when a caller-given read timeout expires,
            # and keeps the connection: the late reply would be read as the next call's.
            # Our replies are never nil, so None means "timed out"; _send drops the stream.
            raise TimeoutError(f"no reply from Redis in {self.timeout_s}s")
        return reply

    async def _call(self, keys: list[str]) -> Any:
        if not hasattr(self.redis, "connection_pool"):
            # A cluster client has no single pool: its script object loads the script on,
            # and routes the call to, the node of the keys' slot (one hash tag per namespace).
            if self._cluster_script is None:
                self._cluster_script = self.redis.register_script(FIXED_WINDOW)
            async with asyncio.timeout(self.timeout_s):
                return await self._cluster_script(keys=keys, args=[self.window_ms])
        if self._sha is None:
            self._sha = await self._command("SCRIPT", "LOAD", FIXED_WINDOW)
        try:
            return await self._command("EVALSHA", self._sha, len(keys), *keys, self.window_ms)
        except NoScriptError:
            # Redis restarted empty: load the script again (one extra round trip, once).
            self._sha = await self._command("SCRIPT", "LOAD", FIXED_WINDOW)
            return await self._command("EVALSHA", self._sha, len(keys), *keys, self.window_ms)

    async def _reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.disconnect(nowait=True)
            except Exception:  # already broken; nothing more to do
                log.debug("fleet counter: disconnect failed", exc_info=True)

    async def aclose(self) -> None:
        await self._reset()
