"""Rate limits: a local fixed-window counter, and a fleet-wide one in Redis.

The fleet-wide limiter is one Lua call per request (INCR, and PEXPIRE on the first hit of
a window): a fixed window that starts at the key's first request. Keys live under the
namespace's hash tag, ``cb:{ns}:rl:client:<name>``, so Redis Cluster keeps them with the
rest of the namespace. While Redis is unreachable it answers from a local window (each
replica then allows up to the limit on its own) and retries Redis after a short pause.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from configbus.store import REDIS_ERRORS

log = logging.getLogger("proxy.limits")

WINDOW_S = 60.0
REDIS_RETRY_AFTER_S = 1.0

# One call counts a whole batch of hits: {count, ttl_ms} per key, in KEYS order (a key may
# repeat: each occurrence is one hit).
_SCRIPT = """
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


class Verdict:
    """The outcome of one limiter hit; `headers()` renders the X-RateLimit-* headers."""

    __slots__ = ("allowed", "limit", "remaining", "reset_s")

    def __init__(self, allowed: bool, limit: int, remaining: int, reset_s: float) -> None:
        self.allowed = allowed
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s

    def header_list(self) -> list[tuple[bytes, bytes]]:
        h = [
            (b"x-ratelimit-limit", str(self.limit).encode()),
            (b"x-ratelimit-remaining", str(self.remaining).encode()),
        ]
        if not self.allowed:
            h.append((b"retry-after", str(max(1, math.ceil(self.reset_s))).encode()))
        return h

    def headers(self) -> dict[str, str]:
        h = {"x-ratelimit-limit": str(self.limit), "x-ratelimit-remaining": str(self.remaining)}
        if not self.allowed:
            h["retry-after"] = str(max(1, math.ceil(self.reset_s)))
        return h


class LocalWindow:
    """Fixed-window counters per key, in this process only."""

    def __init__(
        self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[str, list[float]] = {}  # key -> [window_end, count]

    def hit(self, key: str, limit: int) -> Verdict:
        now = self._clock()
        w = self._windows.get(key)
        if w is None or now >= w[0]:
            if len(self._windows) > 100_000:
                self._windows = {k: v for k, v in self._windows.items() if v[0] > now}
            w = self._windows[key] = [now + self.window_s, 0]
        w[1] += 1
        n = int(w[1])
        return Verdict(n <= limit, limit, max(0, limit - n), w[0] - now)


Pending = list[tuple[str, "asyncio.Future[tuple[int, int]]"]]


_LIMITER_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, TimeoutError)


class FleetLimiter:
    """Per-client limits shared by every replica of a namespace, through Redis.

    It talks over one dedicated connection (made from the client's pool settings, so AUTH,
    TLS and unix sockets work) with at most one script call in flight: hits that arrive
    while a call is out go together in the next call. At low load a hit costs one round
    trip with no extra hop; under load one call serves a whole batch.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        *,
        window_s: float = WINDOW_S,
        timeout_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.prefix = f"cb:{{{namespace}}}:rl:client:"
        self.window_ms = int(window_s * 1000)
        self.timeout_s = timeout_s
        self.local = LocalWindow(window_s, clock)
        self._clock = clock
        self._sha: str | None = None
        self._down_until = 0.0
        self._pending: Pending = []
        self._sending = False
        self._conn: Any = None
        self._cluster_script: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def degraded(self) -> bool:
        return self._clock() < self._down_until

    async def hit(self, client: str, limit: int) -> Verdict:
        if self._clock() < self._down_until:
            return self.local.hit(client, limit)
        fut: asyncio.Future[tuple[int, int]] = asyncio.get_running_loop().create_future()
        self._pending.append((self.prefix + client, fut))
        if not self._sending:
            await self._pump()
        n, ttl_ms = await fut
        if n < 0:  # Redis failed for this batch
            return self.local.hit(client, limit)
        return Verdict(n <= limit, limit, max(0, limit - n), ttl_ms / 1000)

    async def _pump(self) -> None:
        """Send one batch; hand any hits that queued meanwhile to a task of their own."""
        self._sending = True
        batch, self._pending = self._pending, []
        try:
            await self._send(batch)
        finally:
            for _, fut in batch:  # only left undone if we were cancelled mid-call
                if not fut.done():
                    fut.set_result((-1, 0))
            self._sending = False
            if self._pending:
                self._sending = True
                t = asyncio.get_running_loop().create_task(self._pump_later())
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)

    async def _pump_later(self) -> None:
        self._sending = False
        await self._pump()

    async def _send(self, batch: Pending) -> None:
        try:
            res = await self._call([key for key, _ in batch])
        except _LIMITER_ERRORS as exc:
            await self._reset()
            if not self.degraded:
                log.warning("rate limiter: Redis unreachable (%r); limiting locally", exc)
            self._down_until = self._clock() + REDIS_RETRY_AFTER_S
            return
        except BaseException:
            await self._reset()  # a reply may still be on its way: the stream is unusable
            raise
        for i, (_, fut) in enumerate(batch):
            if not fut.done():
                fut.set_result((int(res[2 * i]), int(res[2 * i + 1])))

    async def _command(self, *args: Any) -> Any:
        conn = self._conn
        if conn is None:
            pool = self.redis.connection_pool
            # Timeouts are applied per call below; no per-write wait_for inside redis-py.
            conn = self._conn = pool.connection_class(
                **{**pool.connection_kwargs, "socket_timeout": None}
            )
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
                self._cluster_script = self.redis.register_script(_SCRIPT)
            async with asyncio.timeout(self.timeout_s):
                return await self._cluster_script(keys=keys, args=[self.window_ms])
        if self._sha is None:
            self._sha = await self._command("SCRIPT", "LOAD", _SCRIPT)
        try:
            return await self._command("EVALSHA", self._sha, len(keys), *keys, self.window_ms)
        except NoScriptError:
            # Redis restarted empty: load the script again (one extra round trip, once).
            self._sha = await self._command("SCRIPT", "LOAD", _SCRIPT)
            return await self._command("EVALSHA", self._sha, len(keys), *keys, self.window_ms)

    async def _reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.disconnect(nowait=True)
            except Exception:  # already broken; nothing more to do
                log.debug("rate limiter: disconnect failed", exc_info=True)

    async def aclose(self) -> None:
        await self._reset()
