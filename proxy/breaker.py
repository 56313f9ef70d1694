"""A per-provider circuit breaker: closed → open → half-open → closed.

- closed: calls pass; `failure_threshold` consecutive failures open it.
- open: calls are refused until `recovery_timeout_s` has passed, then it is half-open.
- half-open: up to `half_open_max_calls` probes pass; a success closes it, a failure
  opens it again for another `recovery_timeout_s`.

The clock is injected so the state machine is tested without sleeping. One event loop
drives it, so there are no locks.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from configbus.document import CircuitBreaker


class BreakerState(enum.IntEnum):
    # The values are the `breaker_state` metric: 0 closed, 1 half-open, 2 open.
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
            return
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self.config.failure_threshold:
            self._open()

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
