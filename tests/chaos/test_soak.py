"""The chaos soak, short: `python -m bench.chaos --minutes 1.3` against a real fleet, checked on
its JSON summary. Every fault kind runs at least once (the network namespace fault only as
root); the 10-minute run is `make chaos`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from configbus.tooling.netns import unavailable
from tests.support import ROOT

pytestmark = pytest.mark.slow


def test_one_minute_soak_keeps_every_invariant(tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    args = [
        sys.executable,
        *("-m", "bench.chaos"),
        *("--minutes", "1.3", "--run-dir", str(tmp_path / "run"), "--json-out", str(out)),
    ]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _, stderr_bytes = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        # SIGTERM cancels the soak, whose cleanup stops everything it started, by PID.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        finally:
            proc.kill()
            proc.wait()
        pytest.fail("the short soak did not finish in 150 s")
    stderr = stderr_bytes.decode(errors="replace")
    assert out.exists(), f"no summary (exit {proc.returncode}):\n{stderr[-4000:]}"
    summary = json.loads(out.read_text())
    assert "error" not in summary, summary["error"]
    context = json.dumps(
        {k: summary[k] for k in ("requests", "versions", "replicas", "faults")}, indent=1
    )[-6000:]
    failed = [name for name, ok in summary["checks"].items() if not ok]
    assert not failed, f"checks failed: {failed}\n{context}"

    req, versions = summary["requests"], summary["versions"]
    assert req["sent"] > 1000 and req["failed"] == 0
    assert req["failed_by_cause"] == {
        "config": 0,
        "redis_or_internal": 0,
        "transport": 0,
        "upstream": 0,
        "rate_limit": 0,
    }
    assert req["answered_by_fallback"] > 0  # the upstream fault was routed to the fallback
    assert versions["published"] >= 30 and versions["epochs"] >= 2
    assert not versions["lost"] and not versions["doubled"] and not versions["neither"]
    assert summary["replicas"]["violation_count"] == 0
    kinds = set(summary["faults"]["per_kind"])
    assert kinds >= {
        "redis_kill_with_data",
        "redis_restart_empty",
        "redis_pause",
        "pubsub_kill",
        "replica_restart",
        "invalid_document",
        "corrupt_record",
        "two_admins",
        "upstream_fail",
        "rollout_aborted",
        "rollout_promoted",
        "net_latency",
        "net_loss",
        "net_cut",
        "netns_link_down",
    }
    netns = next(f for f in summary["faults"]["log"] if f["kind"] == "netns_link_down")
    if os.geteuid() == 0 and unavailable() is None:
        assert "skipped" not in netns and netns["failed_meanwhile"] == 0, netns
    else:
        assert netns["skipped"] == unavailable(), netns
    states = {s["state"] for s in summary["rollouts"].values()}
    assert states == {"aborted", "promoted"}, summary["rollouts"]
    assert summary["checks"]["no_replica_outside_a_stage_ran_its_version"]
    for fault in summary["faults"]["log"]:
        if fault["kind"] != "upstream_fail":
            assert fault["back_on_head_s"] is not None and fault["back_on_head_s"] <= 2.0, fault
    assert proc.returncode == 0
