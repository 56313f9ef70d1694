"""A circuit breaker: fail fast while something is down, let a few probes find it back.

    closed ──(failure_threshold failures in a row)──► open ◄──(a probe fails)──┐
      ▲                                               │ recovery_timeout_s     │
      │                                               ▼                        │
      └──────────────(a probe succeeds)───────────── half-open ────────────────┘
                                        (up to half_open_max_calls probes at once)

The caller reports each call: `allow()` before it, then `success()`, `failure()` or
`release()` (no verdict, e.g. cancelled). What counts as a failure and how "open" is
answered belong to the caller: the admin around Redis (`admin/breaker.py`), the proxy per
upstream provider. The clock is injected so the state machine is tested without sleeping.
One event loop drives it, so plain attributes and no locks: it sits on the request path.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from configbus.document import CircuitBreaker


class BreakerState(enum.IntEnum):
    # The values are metric values (the proxy's `breaker_state`): 0 closed, 1 half-open,
    # 2 open, so a dashboard can plot "how open" as a number.
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Breaker:
    def __init__(
        self,
        config: CircuitBreaker,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        self.config = config
        self._clock = clock
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._recovered():
            return BreakerState.HALF_OPEN
        return self._state

    def _recovered(self) -> bool:
        return self._clock() - self._opened_at >= self.config.recovery_timeout_s

    def retry_after_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 once it would)."""
        return max(0.0, self.config.recovery_timeout_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go out now? In half-open, True takes one probe slot."""
        st = self._state
        if st is BreakerState.CLOSED:
            return True
        if st is BreakerState.OPEN:
            if not self._recovered():
                return False
            self._set(BreakerState.HALF_OPEN)
            self._probes = 0
        if self._probes >= self.config.half_open_max_calls:
            return False
        self._probes += 1
        return True

    def success(self) -> None:
        self._failures = 0
        if self._state is not BreakerState.CLOSED:
            self._probes = 0
            self._set(BreakerState.CLOSED)

    def failure(self) -> None:
        if self._state is BreakerState.HALF_OPEN:
            self._open()
        elif self._state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.config.failure_threshold:
                self._open()
        # Open: a call let through before it opened failed late; the period is not extended.

    def release(self) -> None:
        """A call that passed `allow()` ended with no verdict (e.g. the client went away)."""
        if self._state is BreakerState.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._failures = 0
        self._probes = 0
        self._set(BreakerState.OPEN)

    def _set(self, state: BreakerState) -> None:
        if state is not self._state:
            self._state = state
            if self._on_change is not None:
                self._on_change(state)
