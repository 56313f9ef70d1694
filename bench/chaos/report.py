"""The JSON summary: every check the soak makes, judged on the ledger, and the figures."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from bench.chaos.faults import FAULTS
from bench.chaos.invariants import BACK_ON_HEAD_S, Ledger, Version

CAUSES = ("config", "redis_or_internal", "transport", "upstream", "rate_limit")


def _publishes(ledger: Ledger, run_id: str) -> dict[str, Any]:
    """Every 201 a distinct version in history, every history entry ours."""
    keys_in_history: dict[tuple[str, str], list[int]] = defaultdict(list)
    unknown = []
    for (epoch, v), message in sorted(ledger.history.items()):
        if (epoch, v) in ledger.injected:
            continue
        if not message.startswith(f"chaos-{run_id}-"):
            unknown.append({"epoch": epoch, "version": v, "message": message[:80]})
        keys_in_history[(epoch, message)].append(v)
    doubled = list(ledger.doubled) + [
        {"epoch": e, "key": key, "versions": vs}
        for (e, key), vs in keys_in_history.items()
        if len(vs) > 1
    ]
    lost: list[dict[str, Any]] = []
    lost_to_wipe = unverified = 0
    for (epoch, v), key in ledger.created.items():
        if (epoch, v) in ledger.history:
            if ledger.history[(epoch, v)] != key:
                lost.append({"version": v, "key": key, "history_says": ledger.history[(epoch, v)]})  # fmt: skip
        elif epoch in ledger.wiped_epochs:
            lost_to_wipe += 1
        elif v < ledger.history_min.get(epoch, 0):
            unverified += 1  # trimmed before the auditor saw it
        else:
            lost.append({"epoch": epoch, "version": v, "key": key})
    return {"unknown": unknown, "doubled": doubled, "lost": lost,
            "lost_to_wipe": lost_to_wipe, "unverified": unverified}  # fmt: skip


def _acks(ledger: Ledger, replica_ids: set[str]) -> tuple[int, int, list[dict[str, Any]]]:
    """Each publish acknowledged by every replica, or superseded by a later version."""
    by_epoch: dict[str, list[int]] = defaultdict(list)
    for epoch, v in ledger.created:
        by_epoch[epoch].append(v)
    acked_all = superseded = 0
    unacked = []
    for epoch, v in ledger.created:
        ev: Version = (epoch, v)
        if ledger.acks.get(ev, set()) >= replica_ids:
            acked_all += 1
        elif (
            max(by_epoch[epoch]) > v
            or epoch in ledger.wiped_epochs
            or any(i[0] == epoch and i[1] > v for i in ledger.injected)
        ):
            superseded += 1
        else:
            unacked.append({"epoch": epoch, "version": v, "acked_by": sorted(ledger.acks.get(ev, set()))})  # fmt: skip
    return acked_all, superseded, unacked


def summary(
    ledger: Ledger,
    *,
    run_id: str,
    replica_ids: set[str],
    head: tuple[str | None, int],
    final_converge_s: float | None,
    minutes: float,
    seed: int,
    run_dir: str,
    network: dict[str, Any] | None = None,
    keys: dict[str, Any] | None = None,
) -> dict[str, Any]:
    pubs = _publishes(ledger, run_id)
    outside = ledger.outside_stage()
    ledger.violations.extend(outside)
    acked_all, superseded, unacked = _acks(ledger, replica_ids)
    faults = ledger.faults
    slow = [
        {"kind": f["kind"], "at_s": f["at_s"], "back_on_head_s": f.get("back_on_head_s")}
        for f in faults
        if f["kind"] != "upstream_fail"
        and (f.get("back_on_head_s") is None or f["back_on_head_s"] > BACK_ON_HEAD_S)
    ]
    failed = ledger.failed
    config_or_redis = failed["config"] + failed["redis_or_internal"] + failed["transport"]
    checks = {
        "no_request_failed_for_config_or_redis": config_or_redis == 0,
        "no_request_failed_at_all": ledger.requests["failed"] == 0,
        "every_publish_acked_or_superseded": not unacked,
        "no_replica_violation": not ledger.violations,
        "back_on_head_within_2s": not slow,
        "every_fault_ok": all(f.get("ok") for f in faults),
        "no_publish_lost": not pubs["lost"],
        "no_publish_doubled": not pubs["doubled"],
        "no_unknown_version": not pubs["unknown"],
        # the admin's Redis timeout is 1 s: a 503 must not cost more than one of them
        "admin_503_fast": ledger.slowest_503_s < 1.5,
        "sre_view_follows": all(
            f.get("sre_view_s") is not None for f in faults if f["kind"] != "upstream_fail"
        ),
        "final_all_on_head": final_converge_s is not None,
        "every_fault_kind_ran": {f["kind"] for f in faults} >= set(FAULTS),
        "no_replica_outside_a_stage_ran_its_version": not outside,
    }
    # Limits on (every kind, far above the load): Redis faults must send them local and
    # refuse nothing (a 429 is a failure of its own cause).
    checks["limits_went_local_and_refused_nothing"] = (
        bool(ledger.limits_local) and failed["rate_limit"] == 0
    ) or not any(f["kind"].startswith("redis_") for f in faults)
    if keys is not None:
        checks["no_key_change_lost"] = not keys["lost"] and not keys["resurrected"]
        checks["no_revoked_key_accepted_after_its_ack"] = keys["violation_count"] == 0
        checks["every_replica_holds_the_final_key_revision"] = all(
            rev == keys["collection_rev"] for rev in keys["replica_revs"].values()
        )
        checks["keys_churned_probed_and_checked"] = (
            keys["revoked"] > 0 and keys["revoked_refused"] > 0 and keys["checkpoints"] > 0
        )
    recovery: dict[str, list[float | None]] = defaultdict(list)
    for f in faults:
        recovery[f["kind"]].append(f.get("back_on_head_s"))
    head_epoch, head_version = head
    return {
        "ok": all(checks.values()),
        "checks": checks,
        "minutes": round(minutes, 2),
        "seed": seed,
        "requests": {
            "sent": ledger.requests["sent"],
            "ok": ledger.requests["ok"],
            "failed": ledger.requests["failed"],
            "failed_by_cause": {c: failed[c] for c in CAUSES},
            "answered_by_fallback": ledger.fallback_answers,
            # Upstream failures of the canary while it ran a broken rollout: the guard's input.
            "failed_on_canary_of_broken_rollout": ledger.requests["failed_in_trial"],
            "failure_samples": ledger.failure_samples,
        },
        "versions": {
            "published": len(ledger.created),
            "acknowledged_by_every_replica": acked_all,
            "superseded_before_every_ack": superseded,
            "neither": unacked,
            "injected_bad": len(ledger.injected),
            "lost_with_wiped_epoch": pubs["lost_to_wipe"],
            "trimmed_before_audit": pubs["unverified"],
            "lost": pubs["lost"],
            "doubled": pubs["doubled"],
            "unknown_in_history": pubs["unknown"],
            "publish_answers": dict(ledger.publish_outcomes),
            "slowest_503_s": round(ledger.slowest_503_s, 3),
            "final_head": head_version,
            "final_epoch": head_epoch,
            "epochs": len({e for e, _ in ledger.created}),
        },
        "replicas": {
            "status_polls": ledger.polls,
            "violations": ledger.violations[:50],
            "violation_count": len(ledger.violations),
            "final_converge_s": final_converge_s,
        },
        "rollouts": {
            f"{e[0][:8]}:{v}": {"stage": sorted(s.stage), "state": s.state}
            for (e, v), s in ledger.rollouts.items()
        },
        "faults": {
            "count": len(faults),
            "per_kind": {k: len(v) for k, v in recovery.items()},
            "back_on_head_s": dict(recovery),
            "slow_or_never": slow,
            "log": faults,
        },
        "limits_local_seen_on": sorted(ledger.limits_local),
        "network": network or {},
        "keys": keys or {},
        "run_dir": run_dir,
    }
