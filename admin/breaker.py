"""The circuit breaker around Redis: the library's state machine (`configbus.breaker`), with
what only the admin decides: a `StoreUnavailable` is a failure, and an open circuit answers
`BreakerOpen` (a `StoreUnavailable`, so it becomes a 503) with when to retry."""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from configbus.breaker import Breaker
from configbus.document import CircuitBreaker as BreakerSettings
from configbus.errors import StoreUnavailable

T = TypeVar("T")


class BreakerOpen(StoreUnavailable):
    """Redis is considered down: the call was not attempted."""

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"Redis unavailable (circuit open, retry in {retry_after_s:.1f}s)")


class CircuitBreaker(Breaker):
    """Opens after `failures` StoreUnavailable in a row; one probe after `reset_s`."""

    def __init__(
        self, *, failures: int, reset_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(
            BreakerSettings(failure_threshold=failures, recovery_timeout_s=reset_s), clock=clock
        )

    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s())))

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run `fn` unless the circuit is open; StoreUnavailable counts as a failure."""
        if not self.allow():
            raise BreakerOpen(self.retry_after_s())
        try:
            result = await fn()
        except StoreUnavailable:
            self.failure()
            raise
        except BaseException:
            # Redis answered (a domain error) or the request went away: no verdict.
            self.release()
            raise
        self.success()
        return result
