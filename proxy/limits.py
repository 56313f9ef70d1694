"""Rate limits: a local fixed-window counter, and a fleet-wide one in Redis.

The fleet-wide limiter counts each client's requests in a fixed window in Redis
(`configbus.counters`, keys `cb:{ns}:rl:client:<name>`). While Redis is unreachable it
answers from a local window (each replica then allows up to the limit on its own) and
retries Redis after a short pause.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis

from configbus.counters import FleetCounter, counter_key
from configbus.errors import StoreError

log = logging.getLogger("proxy.limits")

WINDOW_S = 60.0
REDIS_RETRY_AFTER_S = 1.0


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


class FleetLimiter:
    """Per-client limits shared by every replica of a namespace, through a fleet counter.

    While Redis is unreachable it answers from a local window (each replica then allows up
    to the limit on its own) and tries Redis again after `REDIS_RETRY_AFTER_S`.
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
        self.counter = FleetCounter(redis, window_s=window_s, timeout_s=timeout_s)
        self.prefix = counter_key("client", "", namespace=namespace)
        self.local = LocalWindow(window_s, clock)
        self._clock = clock
        self._down_until = 0.0

    @property
    def degraded(self) -> bool:
        return self._clock() < self._down_until

    async def hit(self, client: str, limit: int) -> Verdict:
        if self._clock() < self._down_until:
            return self.local.hit(client, limit)
        try:
            n, ttl_ms = await self.counter.count(self.prefix + client)
        except StoreError as exc:
            if not self.degraded:
                log.warning("rate limiter: Redis unreachable (%s); limiting locally", exc)
            self._down_until = self._clock() + REDIS_RETRY_AFTER_S
            return self.local.hit(client, limit)
        return Verdict(n <= limit, limit, max(0, limit - n), ttl_ms / 1000)

    async def aclose(self) -> None:
        await self.counter.aclose()
