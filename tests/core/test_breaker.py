"""The one circuit breaker state machine, as both its users configure it: the admin's
(one probe, seconds to recover) and providers' in a document (several probes)."""

from __future__ import annotations

import pytest

from configbus.breaker import Breaker, BreakerState
from configbus.document import CircuitBreaker


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


SETTINGS = pytest.mark.parametrize(
    ("threshold", "recovery", "probes"),
    [(1, 10.0, 1), (3, 0.5, 1), (5, 30.0, 3)],
    ids=["one-failure", "admin-like", "document-default-3-probes"],
)


def test_metric_values_are_stable() -> None:
    assert [int(s) for s in (BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN)] == [
        0,
        1,
        2,
    ]


@SETTINGS
def test_opens_after_threshold_consecutive_failures(
    threshold: int, recovery: float, probes: int
) -> None:
    b, _, changes = make(threshold, recovery, probes)
    for _ in range(threshold - 1):
        assert b.allow()
        b.failure()
    assert state(b) is BreakerState.CLOSED
    b.failure()
    assert state(b) is BreakerState.OPEN
    assert not b.allow()
    assert changes == [BreakerState.OPEN]


@SETTINGS
def test_success_resets_the_failure_count(threshold: int, recovery: float, probes: int) -> None:
    b, _, _ = make(threshold, recovery, probes)
    for _ in range(threshold - 1):
        b.failure()
    b.success()
    for _ in range(threshold - 1):
        b.failure()
    assert state(b) is BreakerState.CLOSED


@SETTINGS
def test_half_open_after_recovery_then_probe_success_closes(
    threshold: int, recovery: float, probes: int
) -> None:
    b, clock, changes = make(threshold, recovery, probes)
    for _ in range(threshold):
        b.failure()
    clock.now += recovery * 0.99
    assert not b.allow()
    assert 0 < b.retry_after_s() <= recovery * 0.01 + 1e-9
    clock.now += recovery * 0.02
    assert state(b) is BreakerState.HALF_OPEN and b.retry_after_s() == 0
    assert all(b.allow() for _ in range(probes))  # the probes
    assert not b.allow()  # no more at once
    b.success()
    assert state(b) is BreakerState.CLOSED
    assert b.allow()
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


@SETTINGS
def test_probe_failure_reopens_for_a_full_recovery_period(
    threshold: int, recovery: float, probes: int
) -> None:
    b, clock, _ = make(threshold, recovery, probes)
    for _ in range(threshold):
        b.failure()
    clock.now += recovery
    assert b.allow()
    b.failure()
    assert state(b) is BreakerState.OPEN
    assert b.retry_after_s() == recovery
    clock.now += recovery / 2
    assert not b.allow()
    clock.now += recovery / 2
    assert b.allow()


@SETTINGS
def test_late_failures_while_open_do_not_extend_the_open_period(
    threshold: int, recovery: float, probes: int
) -> None:
    b, clock, changes = make(threshold, recovery, probes)
    for _ in range(threshold):
        b.failure()
    clock.now += recovery / 2
    b.failure()  # a call let through before it opened, failing only now
    clock.now += recovery / 2
    assert state(b) is BreakerState.HALF_OPEN
    assert changes == [BreakerState.OPEN]


@pytest.mark.parametrize("probes", [1, 2, 5])
def test_half_open_allows_configured_probes_and_release_frees_one(probes: int) -> None:
    b, clock, _ = make(threshold=1, recovery=1, probes=probes)
    b.failure()
    clock.now += 1
    assert all(b.allow() for _ in range(probes))
    assert not b.allow()
    b.release()
    assert b.allow()
    assert not b.allow()


def test_release_outside_half_open_changes_nothing() -> None:
    b, _, changes = make(threshold=2)
    b.release()
    b.failure()
    b.release()
    b.failure()
    assert state(b) is BreakerState.OPEN and changes == [BreakerState.OPEN]
