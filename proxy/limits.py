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
from redis.exceptions import NoScriptError, RedisError

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
        h = [(b"x-ratelimit-limit", str(self.limit).encode()),
             (b"x-ratelimit-remaining", str(self.remaining).encode())]
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

    def __init__(self, window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
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


class FleetLimiter:
    """Per-client limits shared by every replica of a namespace, through Redis.

    Hits that arrive in the same event-loop turn go out together as one script call (one
    round trip for all of them): under load that is one Redis call per batch instead of
    one per request, and never more than one round trip for any request.
    """

    def __init__(self, redis: aioredis.Redis, namespace: str, *,
                 window_s: float = WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.redis = redis
        self.prefix = f"cb:{{{namespace}}}:rl:client:"
        self.window_ms = int(window_s * 1000)
        self.local = LocalWindow(window_s, clock)
        self._clock = clock
        self._sha: str | None = None
        self._down_until = 0.0
        self._pending: list[tuple[str, int, asyncio.Future[tuple[int, int]]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def degraded(self) -> bool:
        return self._clock() < self._down_until

    async def hit(self, client: str, limit: int) -> Verdict:
        if self._clock() < self._down_until:
            return self.local.hit(client, limit)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, int]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((client, limit, fut))
        n, ttl_ms = await fut
        if n < 0:  # Redis failed for this batch
            return self.local.hit(client, limit)
        return Verdict(n <= limit, limit, max(0, limit - n), ttl_ms / 1000)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        t = asyncio.get_running_loop().create_task(self._send(batch))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _send(self, batch: list[tuple[str, int, asyncio.Future[tuple[int, int]]]]) -> None:
        keys = [self.prefix + client for client, _, _ in batch]
        try:
            res = await self._call(keys)
        except (RedisError, OSError) as exc:
            if not self.degraded:
                log.warning("rate limiter: Redis unreachable (%s); limiting locally", exc)
            self._down_until = self._clock() + REDIS_RETRY_AFTER_S
            res = [-1, 0] * len(batch)
        except BaseException as exc:
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            raise
        for i, (_, _, fut) in enumerate(batch):
            if not fut.done():
                fut.set_result((int(res[2 * i]), int(res[2 * i + 1])))

    async def _call(self, keys: list[str]) -> Any:
        if self._sha is None:
            self._sha = await self.redis.script_load(_SCRIPT)
        try:
            return await self.redis.evalsha(self._sha, len(keys), *keys, self.window_ms)
        except NoScriptError:
            # Redis restarted empty: load the script again (one extra round trip, once).
            self._sha = await self.redis.script_load(_SCRIPT)
            return await self.redis.evalsha(self._sha, len(keys), *keys, self.window_ms)
