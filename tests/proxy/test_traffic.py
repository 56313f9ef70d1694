from __future__ import annotations

from configbus.rollout import LATENCY_BUCKETS_MS, p99_ms
from proxy.traffic import KEEP_VERSIONS, TrafficCounter


def test_counts_per_version_with_latency_buckets_and_a_bounded_history() -> None:
    t = TrafficCounter()
    for _ in range(98):
        t.record(3, 0.004, False)
    t.record(3, 0.7, True)
    t.record(3, 120.0, True)  # past the last bound: the overflow bucket
    snap = t.snapshot()["3"]
    assert (snap.requests, snap.errors) == (100, 2)
    assert len(snap.buckets) == len(LATENCY_BUCKETS_MS) + 1
    assert snap.buckets[0] == 98 and snap.buckets[-1] == 1
    assert p99_ms(snap) == 1000
    for v in range(4, 4 + KEEP_VERSIONS):
        t.record(v, 0.01, False)
    assert sorted(t.snapshot()) == [str(v) for v in range(4, 4 + KEEP_VERSIONS)]
