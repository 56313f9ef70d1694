"""Rollout rules as pure logic: selectors, stable share selection, the guard's verdicts."""

from __future__ import annotations

import math

import pytest

from configbus.rollout import (
    LATENCY_BUCKETS_MS,
    Guard,
    Rollout,
    RolloutState,
    Selector,
    Stage,
    Traffic,
    add,
    judge,
    p99_ms,
    parse_selector,
    share_members,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10%", Selector(share=10)),
        ("100%", Selector(share=100)),
        ("tier=canary", Selector(labels={"tier": "canary"})),
        ("tier=canary,zone=eu", Selector(labels={"tier": "canary", "zone": "eu"})),
    ],
)
def test_selectors_parse(text: str, expected: Selector) -> None:
    assert parse_selector(text) == expected
    assert parse_selector(str(expected)) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0%", "above 0%"),
        ("101%", "at most 100%"),
        ("x%", "not a percentage"),
        ("tier", "'tier' is not key=value"),
        ("tier=can ary", "label 'tier' value 'can ary'"),
        ("=x", "label name ''"),
    ],
)
def test_bad_selectors_name_the_part(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_selector(text)


def test_shares_select_exact_counts_and_the_same_replicas_after_restarts() -> None:
    live = [f"replica-{i}" for i in range(10)]
    stages = [Stage(selector=Selector(share=s)) for s in (10, 50, 100)]
    members: tuple[str, ...] = ()
    seen = []
    for stage in stages:
        members = share_members(stage, live, members)
        seen.append(members)
    assert [len(m) for m in seen] == [1, 5, 10]
    assert set(seen[0]) <= set(seen[1]) <= set(seen[2])
    # Replicas restart (same ids, another order): the same ones are chosen.
    again: tuple[str, ...] = ()
    for stage, before in zip(stages, seen, strict=True):
        again = share_members(stage, list(reversed(live)), again)
        assert set(again) == set(before)


def test_a_share_after_a_label_stage_counts_the_labelled_replicas() -> None:
    live = ["canary-1", "r2", "r3", "r4"]
    half = Stage(selector=Selector(share=50))
    members = share_members(half, live, by_labels=["canary-1"])
    assert len(members) == 1 and "canary-1" not in members  # 2 of 4 run it, not 3


def test_a_member_or_a_label_match_selects_until_the_rollout_ends() -> None:
    r = Rollout(
        id="r1", version=2, sha256="s", epoch="e", base=1,
        stages=(Stage(selector=Selector(labels={"tier": "canary"})),
                Stage(selector=Selector(share=50))),
    )  # fmt: skip
    assert r.selects("a", {"tier": "canary", "zone": "eu"})
    assert not r.selects("a", {"tier": "stable"})
    assert not r.selects("b", {})
    # The share stage starts: the admin adds its members.
    r2 = Rollout(**{**_fields(r), "stage": 1, "members": ("b",)})
    assert r2.selects("b", {}) and r2.selects("a", {"tier": "canary"})
    ended = Rollout(**{**_fields(r2), "state": RolloutState.ABORTED})
    assert not ended.selects("a", {"tier": "canary"})


def _fields(r: Rollout) -> dict[str, object]:
    return {f: getattr(r, f) for f in r.__struct_fields__}


def traffic(requests: int, errors: int = 0, ms: float = 20) -> Traffic:
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    index = next((i for i, b in enumerate(LATENCY_BUCKETS_MS) if ms <= b), len(buckets) - 1)
    buckets[index] = requests
    return Traffic(requests, errors, tuple(buckets))


def test_p99_is_the_bucket_bound_and_add_sums() -> None:
    assert p99_ms(traffic(100, ms=40)) == 50
    assert p99_ms(traffic(10, ms=10**6)) == math.inf
    assert p99_ms(Traffic()) == 0
    total = add([traffic(99, ms=5), traffic(1, ms=900)])
    assert total.requests == 100 and p99_ms(total) == 5


def test_traffic_since_a_zero_point_and_after_a_restart() -> None:
    now, then = traffic(50, 5), traffic(20, 1)
    assert now.minus(then).requests == 30 and now.minus(then).errors == 4
    assert traffic(3).minus(then) == traffic(3)  # counts went down: the replica restarted


@pytest.mark.parametrize(
    ("stage", "baseline", "decision", "reason"),
    [
        (traffic(10), traffic(100), "wait", "10 of 20 requests"),
        (traffic(120, 120), traffic(300), "abort", "error rate 100% vs baseline 0% over 120"),
        (traffic(100, 4), traffic(300), "pass", "error rate 4%"),
        # The baseline errs too: only a multiple of its rate fails.
        (traffic(100, 15), traffic(300, 30), "pass", "error rate 15% vs baseline 10%"),
        (traffic(100, 25), traffic(300, 30), "abort", "error rate 25% vs baseline 10%"),
        (traffic(100, 0, ms=2000), traffic(300, 0, ms=40), "abort", "p99 2500 ms vs baseline 50"),
        (traffic(100, 0, ms=90), traffic(300, 0, ms=40), "pass", "p99 100 ms"),
        (traffic(100, 10), Traffic(), "abort", "10% (no baseline traffic)"),
    ],
)
def test_guard_verdicts(stage: Traffic, baseline: Traffic, decision: str, reason: str) -> None:
    v = judge(Guard(), stage, baseline, label="stage 1")
    assert v.decision == decision
    assert reason in v.reason
    assert v.reason.startswith("stage 1")
