from __future__ import annotations

from configbus.document import CircuitBreaker
from proxy.breaker import Breaker, BreakerState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(b: Breaker) -> BreakerState:
    return b.state  # a call, so the type checker does not narrow it between steps


def make(
    threshold: int = 3, recovery: float = 10.0, probes: int = 1
) -> tuple[Breaker, Clock, list[BreakerState]]:
    clock, changes = Clock(), list[BreakerState]()
    b = Breaker(
        CircuitBreaker(
            failure_threshold=threshold, recovery_timeout_s=recovery, half_open_max_calls=probes
        ),
        clock=clock,
        on_change=changes.append,
    )
    return b, clock, changes


def test_opens_after_threshold_consecutive_failures() -> None:
    b, _, changes = make(threshold=3)
    for _ in range(2):
        assert b.allow()
        b.failure()
    assert state(b) is BreakerState.CLOSED
    b.failure()
    assert state(b) is BreakerState.OPEN
    assert not b.allow()
    assert changes == [BreakerState.OPEN]


def test_success_resets_the_failure_count() -> None:
    b, _, _ = make(threshold=3)
    b.failure()
    b.failure()
    b.success()
    b.failure()
    b.failure()
    assert state(b) is BreakerState.CLOSED


def test_half_open_after_recovery_then_probe_success_closes() -> None:
    b, clock, changes = make(threshold=1, recovery=10)
    b.failure()
    clock.now += 9.9
    assert not b.allow()
    clock.now += 0.2
    assert state(b) is BreakerState.HALF_OPEN
    assert b.allow()  # the probe
    assert not b.allow()  # only one probe at a time
    b.success()
    assert state(b) is BreakerState.CLOSED
    assert b.allow()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


def test_probe_failure_reopens_for_a_full_recovery_period() -> None:
    b, clock, _ = make(threshold=1, recovery=10)
    b.failure()
    clock.now += 10
    assert b.allow()
    b.failure()
    assert state(b) is BreakerState.OPEN
    clock.now += 5
    assert not b.allow()
    clock.now += 5
    assert b.allow()


def test_half_open_allows_configured_probes_and_release_frees_one() -> None:
    b, clock, _ = make(threshold=1, recovery=1, probes=2)
    b.failure()
    clock.now += 1
    assert b.allow()
    assert b.allow()
    assert not b.allow()
    b.release()
    assert b.allow()
