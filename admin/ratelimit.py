"""The publish rate limit: a fixed window per token, shared by every admin instance through
Redis, checked in one round trip (one Lua script)."""

from __future__ import annotations

import math

import msgspec
import redis.asyncio as aioredis

from configbus.store import REDIS_ERRORS, store_error

# KEYS: counter; ARGV: limit, window ms. Returns {allowed 0/1, count, ms left in the window}.
_WINDOW = r"""
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]); ttl = tonumber(ARGV[2]) end
if n > tonumber(ARGV[1]) then return {0, n, ttl} end
return {1, n, ttl}
"""


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    remaining: int
    retry_after_s: int


class RateLimiter:
    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        limit: int,
        window_s: int,
        prefix: str = "cb:admin:ratelimit:",
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.prefix = prefix
        self._script = redis.register_script(_WINDOW)

    async def hit(self, who: str) -> Decision:
        # The key is its own hash tag: one slot per token in a Redis Cluster.
        key = f"{self.prefix}{{{who}}}"
        try:
            res = await self._script(keys=[key], args=[self.limit, self.window_s * 1000])
        except REDIS_ERRORS as exc:
            raise store_error(exc, "rate limit") from exc
        allowed, count, ttl_ms = (int(x) for x in res)
        return Decision(bool(allowed), max(0, self.limit - count), max(1, math.ceil(ttl_ms / 1000)))
