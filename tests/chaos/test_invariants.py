"""The soak's rollout invariant on a hand-made ledger: who may run a stage's version, when."""

from __future__ import annotations

from pathlib import Path

from bench.chaos.invariants import Ledger, Staged
from bench.chaos.processes import Replica, Service


def replica(rid: str) -> Replica:
    return Replica(Service(rid, ["proxy"], {}, Path("/nonexistent")), rid)


def test_only_the_stage_runs_a_rollouts_version_until_it_is_promoted() -> None:
    ledger = Ledger()
    canary, other = replica("replica-1"), replica("replica-2")
    ledger.observe(canary, {"epoch": "e", "version": 1, "applied_at": 100.0})
    ledger.observe(other, {"epoch": "e", "version": 1, "applied_at": 100.0})
    ledger.rollouts[("e", 2)] = Staged(stage={"replica-1"})
    ledger.rollouts[("e", 3)] = Staged(stage={"replica-1"})
    ledger.observe(canary, {"epoch": "e", "version": 2, "applied_at": 101.0})
    ledger.rollouts[("e", 2)].state, ledger.rollouts[("e", 2)].ended_at = "aborted", 102.0
    ledger.observe(canary, {"epoch": "e", "version": 1, "applied_at": 102.01})
    assert ledger.violations == []  # an aborted stage going back to head is no regression
    assert ledger.outside_stage() == []

    ledger.observe(canary, {"epoch": "e", "version": 3, "applied_at": 103.0})
    ledger.answered(other, 3, 103.5)  # an answer on 3 before it was promoted
    ledger.rollouts[("e", 3)].state, ledger.rollouts[("e", 3)].ended_at = "promoted", 104.0
    ledger.observe(other, {"epoch": "e", "version": 3, "applied_at": 104.01})
    assert [(v["replica"], v["seen_by"]) for v in ledger.outside_stage()] == [
        ("replica-2", "answer")
    ]

    ledger.observe(other, {"epoch": "e", "version": 2, "applied_at": 105.0})
    assert [v["what"] for v in ledger.violations] == ["moved_backwards"]  # 3 was head
    found = ledger.outside_stage()
    assert ("replica-2", 2, "status") in [(v["replica"], v["version"], v["seen_by"]) for v in found]
