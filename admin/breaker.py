"""A circuit breaker around Redis: fail fast while it is down, probe to find it back.

closed ──(N consecutive StoreUnavailable)──► open ──(reset_s elapsed)──► half-open
  ▲                                            ▲                            │ one probe call
  └──────────────── probe succeeds ────────────┴──── probe fails ───────────┘
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from configbus.errors import StoreUnavailable

T = TypeVar("T")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerOpen(StoreUnavailable):
    """Redis is considered down: the call was not attempted."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"Redis unavailable (circuit open, retry in {retry_after_s:.1f}s)")


class CircuitBreaker:
    def __init__(
        self, *, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures_to_open = failures
        self.reset_s = reset_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self._state = BreakerState.CLOSED

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_s:
            return BreakerState.HALF_OPEN
        return self._state

    def retry_after_s(self) -> float:
        return max(0.0, self.reset_s - (self._clock() - self._opened_at))

    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s())))

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` unless the circuit is open; StoreUnavailable counts as a failure."""
        state = self.state
        probe = False
        if state is BreakerState.OPEN or (state is BreakerState.HALF_OPEN and self._probing):
            raise BreakerOpen(self.retry_after_s())
        if state is BreakerState.HALF_OPEN:
            self._probing = probe = True
        try:
            result = await fn()
        except StoreUnavailable:
            self._record_failure(probe)
            raise
        except BaseException:
            if probe:
                self._probing = False
            raise
        self._record_success()
        return result

    def _record_failure(self, probe: bool) -> None:
        self._failures += 1
        if probe:
            self._probing = False
        if probe or self._failures >= self.failures_to_open:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()

    def _record_success(self) -> None:
        self._failures = 0
        self._probing = False
        self._state = BreakerState.CLOSED
