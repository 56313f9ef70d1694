"""The proxy's use of the breaker (the state machine is tested in tests/core): one per
provider, exported as a metric, and carried over a config swap that keeps its settings."""

from __future__ import annotations

import msgspec

from configbus.breaker import BreakerState
from configbus.document import CircuitBreaker
from configbus.testing import sample_document
from proxy.runtime import Builder


async def test_breaker_state_survives_a_swap_and_restarts_when_its_settings_change() -> None:
    exported: list[tuple[str, BreakerState]] = []
    b = Builder(env={}, on_breaker=lambda name, st: exported.append((name, st)))
    doc = sample_document()
    r1 = b.build(doc, None)
    assert sorted(exported) == [("upstream-a", BreakerState.CLOSED), ("upstream-b", 0)]
    exported.clear()
    breaker = r1.providers["upstream-a"].breaker
    for _ in range(3):  # the sample's upstream-a opens after 3 failures
        breaker.failure()
    assert exported == [("upstream-a", BreakerState.OPEN)]

    # Another version, same provider settings: the same breaker, still open.
    r2 = b.build(msgspec.structs.replace(doc, metadata={"owner": "sre"}), r1)
    assert r2.providers["upstream-a"].breaker is breaker
    assert breaker.state is BreakerState.OPEN and not breaker.allow()

    # Changed breaker settings (the document default upstream-b uses): b starts afresh, closed,
    # and its state is exported at once; a keeps its breaker.
    exported.clear()
    r3 = b.build(
        msgspec.structs.replace(doc, circuit_breaker=CircuitBreaker(failure_threshold=9)), r2
    )
    assert r3.providers["upstream-a"].breaker is breaker
    fresh = r3.providers["upstream-b"].breaker
    assert fresh is not r2.providers["upstream-b"].breaker
    assert fresh.config.failure_threshold == 9 and fresh.state is BreakerState.CLOSED
    assert exported == [("upstream-b", BreakerState.CLOSED)]
    for r in (r1, r2, r3):
        r.retire()
