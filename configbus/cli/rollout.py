"""What the CLI shows of a rollout, and the canary flags of `publish` and `patch`.

    configbus publish FILE -m MSG --canary tier=canary [--canary 50%] --bake 60s \\
        [--max-error-rate 5%] [--max-error-ratio 2] [--max-p99-ratio 3] [--min-requests 20]

Each `--canary` is a stage (labels a replica carries, or a share of live replicas); `--bake`
is each stage's bake time. The guard flags override the service's defaults (`Guard`).
"""

from __future__ import annotations

import argparse
import math
import time

import msgspec

from configbus.api import Replicas, RolloutView, StageRequest
from configbus.cli.args import duration_arg, rate_arg, selector_arg
from configbus.cli.text import ago, table
from configbus.errors import ConfigBusError
from configbus.rollout import Guard, Rollout, Stage
from configbus.store import PublishResult

# Guard fields and the flags that set them (the flag is the field's name, dashed).
GUARD_FLAGS = ("max_error_rate", "max_error_ratio", "max_p99_ratio", "min_requests")


def add_canary_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "rollout", "publish to stages of replicas first, judged by live traffic"
    )
    g.add_argument(
        "--canary",
        action="append",
        type=selector_arg,
        metavar="SELECTOR",
        help="a stage: labels (tier=canary) or a share of live replicas (10%%); repeat for "
        "more stages, in order. Starts a rollout instead of publishing to every replica",
    )
    g.add_argument(
        "--bake",
        type=duration_arg,
        metavar="DURATION",
        help="how long each stage runs healthy before the next (10s, 2m, 1h; default 60s)",
    )
    g.add_argument(
        "--preflight",
        action="store_true",
        help="before stage 1, ask each provider whose settings changed for its model list "
        "with the stored key; refuse the rollout if one fails",
    )
    g.add_argument(
        "--max-error-rate",
        type=rate_arg,
        metavar="RATE",
        help=f"abort above this error rate (default {Guard().max_error_rate:.0%})",
    )
    g.add_argument(
        "--max-error-ratio",
        type=float,
        metavar="X",
        help=f"abort above X times the baseline's error rate (default {Guard().max_error_ratio:g})",
    )
    g.add_argument(
        "--max-p99-ratio",
        type=float,
        metavar="X",
        help=f"abort above X times the baseline's p99 (default {Guard().max_p99_ratio:g})",
    )
    g.add_argument(
        "--min-requests",
        type=int,
        metavar="N",
        help=f"judge a stage once it served N requests (default {Guard().min_requests})",
    )


def stages_from(args: argparse.Namespace) -> list[StageRequest] | None:
    """The stages the flags ask for; None for a plain publish."""
    if not args.canary:
        flags = ("bake", *GUARD_FLAGS)
        given = [f"--{f.replace('_', '-')}" for f in flags if _given(args, f)]
        if args.preflight:
            given.append("--preflight")
        if given:
            raise ConfigBusError(f"{', '.join(given)}: only with --canary (a rollout)")
        return None
    bake = {} if args.bake is None else {"bake_s": args.bake}
    try:
        return [msgspec.convert({"selector": s, **bake}, StageRequest) for s in args.canary]
    except msgspec.ValidationError as exc:
        raise ConfigBusError(f"--bake {args.bake:.0f}s: {_rule(exc)} seconds") from None


def guard_from(args: argparse.Namespace) -> Guard:
    """The service's default guard with the flags given laid over it, checked by its rules."""
    given = {f: getattr(args, f) for f in GUARD_FLAGS if _given(args, f)}
    try:
        return msgspec.convert(given, Guard)
    except msgspec.ValidationError as exc:
        field = str(exc).rpartition("$.")[2].rstrip("`")
        flag = f"--{field.replace('_', '-')}"
        raise ConfigBusError(f"{flag} {given.get(field)}: {_rule(exc)}") from None


def _given(args: argparse.Namespace, name: str) -> bool:
    return getattr(args, name, None) is not None


def _rule(exc: msgspec.ValidationError) -> str:
    """msgspec's 'Expected `float` <= 1.0 - at `$.x`' as 'must be <= 1.0'."""
    text = str(exc).partition(" - at ")[0]
    return "must be" + text.partition("`")[2].partition("`")[2] if "`" in text else text


def _duration(s: float) -> str:
    if s >= 3600 and s % 3600 == 0:
        return f"{s / 3600:g}h"
    if s >= 60 and s % 60 == 0:
        return f"{s / 60:g}m"
    return f"{s:g}s"


def describe_stage(stage: Stage) -> str:
    return f"{stage.selector}, bake {_duration(stage.bake_s)}"


def format_started(res: PublishResult, view: RolloutView | None) -> str:
    """What `publish --canary` prints: the version, then the rollout it started."""
    r = view.rollout if view is not None else None
    if r is None or r.version != res.version:
        return f"rollout: version {res.version} (sha256 {res.sha256[:12]})"
    lines = [
        f"rollout {r.id}: version {res.version} (sha256 {res.sha256[:12]}); "
        f"head stays version {r.base} until the last stage passes"
    ]
    lines += [f"  stage {i + 1}: {describe_stage(s)}" for i, s in enumerate(r.stages)]
    lines.append("follow it: configbus watch   (or configbus rollout status)")
    return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{x:.1%}"


def _ms(x: float) -> str:
    return "over 60000 ms" if math.isinf(x) else f"{x:g} ms"


def _guard_text(g: Guard) -> str:
    return (
        f"abort above {_pct(g.max_error_rate)} errors (or {g.max_error_ratio:g}x the "
        f"baseline's), p99 above {g.max_p99_ratio:g}x the baseline's; "
        f"judged after {g.min_requests} requests"
    )


def format_rollout(view: RolloutView, now: float | None = None) -> str:
    """`configbus rollout status`: the rollout, its stage, state and reason, and while it
    runs the guard's live figures."""
    now = time.time() if now is None else now
    r, a = view.rollout, view.assessment
    at = f"stage {r.stage + 1} of {len(r.stages)}"
    state = r.state.value if r.running else r.state.value.upper()
    lines = [
        f"rollout {r.id}: version {r.version} (from head version {r.base})",
        f"  state:    {state} at {at} ({describe_stage(r.stages[r.stage])})",
    ]
    if r.reason:
        lines.append(f"  reason:   {r.reason}")
    lines.append(
        f"  started:  {ago(r.started_at, now)} by {r.author or '-'}"
        + (f": {r.message}" if r.message else "")
        + (f"; ended {ago(r.ended_at, now)}" if r.ended_at else "")
    )
    lines += [
        f"  {'stages:' if i == 0 else '':<9} {i + 1}. {describe_stage(s)}"
        + ("   <- current" if r.running and i == r.stage else "")
        for i, s in enumerate(r.stages)
    ]
    lines.append(f"  guard:    {_guard_text(r.guard)}")
    if a is not None:
        bake = r.stages[r.stage].bake_s
        lines += [
            f"  verdict:  {a.action}: {a.reason}",
            f"  baked:    {a.baked_s:.0f}s of {_duration(bake)}",
        ]
        v = a.verdict
        if v is not None:
            rows = [
                ["", "REQUESTS", "ERROR RATE", "P99", "REPLICAS"],
                [
                    "stage",
                    str(v.stage_requests),
                    _pct(v.stage_error_rate),
                    _ms(v.stage_p99_ms),
                    ", ".join(a.stage_replicas) or "-",
                ],
                [
                    "baseline",
                    str(v.baseline_requests),
                    _pct(v.baseline_error_rate),
                    _ms(v.baseline_p99_ms),
                    ", ".join(a.baseline_replicas) or "-",
                ],
            ]
            lines += ["", *("  " + ln for ln in table(rows).splitlines())]
    return "\n".join(lines)


def progress(view: RolloutView) -> tuple[tuple[object, ...], str]:
    """A running rollout in one line for `watch`, and the key that says it changed (the
    stage, the guard's decision, who is in the stage; not the seconds baked)."""
    r, a = view.rollout, view.assessment
    where = f"rollout {r.id}: version {r.version} at stage {r.stage + 1} of {len(r.stages)}"
    where += f" ({r.stages[r.stage].selector})"
    if a is None:
        return (r.stage, r.state), where
    decision = a.verdict.decision if a.verdict is not None else a.action
    n = len(a.stage_replicas)
    key = (r.stage, r.state, a.action, decision, a.stage_replicas)
    return key, f"{where} on {n} replica{'s' if n != 1 else ''}: {a.reason}"


def bake_left(r: Rollout, now: float) -> float:
    """Seconds of bake left before the rollout can be promoted."""
    current = max(0.0, r.stages[r.stage].bake_s - (now - r.stage_started_at))
    return current + sum(s.bake_s for s in r.stages[r.stage + 1 :])


def staged_versions(res: Replicas) -> set[int]:
    return {r.version for r in res.replicas if r.alive and r.staged}
