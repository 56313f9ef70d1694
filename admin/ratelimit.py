"""The publish rate limit: a fixed window per token, shared by every admin instance through
a fleet counter in Redis (`configbus.counters`, keys `cb:{_}:rl:publish:<token>`)."""

from __future__ import annotations

import math

import msgspec
import redis.asyncio as aioredis

from configbus.counters import FleetCounter, counter_key


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    remaining: int
    retry_after_s: int


class RateLimiter:
    def __init__(
        self, redis: aioredis.Redis, *, limit: int, window_s: int, timeout_s: float
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.counter = FleetCounter(redis, window_s=window_s, timeout_s=timeout_s)

    async def hit(self, who: str) -> Decision:
        """Count a write by token `who`; Redis errors raise StoreError (the breaker's)."""
        count, ttl_ms = await self.counter.count(counter_key("publish", who))
        return Decision(
            count <= self.limit, max(0, self.limit - count), max(1, math.ceil(ttl_ms / 1000))
        )

    async def aclose(self) -> None:
        await self.counter.aclose()
