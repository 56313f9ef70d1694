"""Staged rollouts: which replicas run a new version first, and the guard that judges it.

A rollout is a version written like any other while head stays put. Its stages widen the
set of replicas that run it; each stage is a selector, either labels (`tier=canary`,
matched by the replica itself, so a restarted or new canary joins) or a share of the live
replicas (`10%`: the admin picks the replicas with the lowest hash of their id, so a
restarted replica keeps its place). Stages are cumulative: stage 2 runs where stage 1 did.

The guard compares the stage's replicas (on the new version) with the baseline (everyone
else, on head) over the same window, from the per-version traffic counts replicas put in
their heartbeats: error rate, latency p99 and NACKs. Everything here is pure: the admin
driving a rollout and the tests call it with what Redis holds.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Annotated

import msgspec
from msgspec import Meta

# Upper bounds (ms) of the latency histogram replicas report per version; the last bucket
# is everything above. Wide enough for LLM calls (seconds), fine enough near the fast end.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
)  # fmt: skip

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")
LABEL_RULE = "1-63 letters, digits and . _ / - (starting with a letter or digit)"


class RolloutState(enum.Enum):
    RUNNING = "running"
    PROMOTED = "promoted"
    ABORTED = "aborted"


class Selector(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Labels every one of which a replica must carry, or a share (percent) of live replicas."""

    labels: dict[str, str] = {}
    share: Annotated[float, Meta(gt=0, le=100)] | None = None

    def __post_init__(self) -> None:
        if (self.share is None) == (not self.labels):
            raise ValueError("a selector is labels or a share, exactly one of them")
        for key, value in self.labels.items():
            check_label(key, "label name")
            check_label(value, f"label {key!r} value")

    def __str__(self) -> str:
        if self.share is not None:
            return f"{self.share:g}%"
        return ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))


class Stage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    selector: Selector
    bake_s: Annotated[float, Meta(ge=0, le=7 * 86400)] = 60.0


class Guard(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a stage fails. Defaults fit LLM traffic: errors are rare and latency is noisy."""

    # A stage fails above this error rate whatever the baseline does...
    max_error_rate: Annotated[float, Meta(ge=0, le=1)] = 0.05
    # ...and above this multiple of the baseline's rate when the baseline itself errs.
    max_error_ratio: Annotated[float, Meta(ge=1)] = 2.0
    # p99 above this multiple of the baseline's p99 (and `p99_slack_ms` above it) fails.
    max_p99_ratio: Annotated[float, Meta(ge=1)] = 3.0
    p99_slack_ms: Annotated[float, Meta(ge=0)] = 250.0
    # No verdict on fewer requests than this (either side, for comparisons).
    min_requests: Annotated[int, Meta(ge=1)] = 20


class Traffic(msgspec.Struct, frozen=True, array_like=True):
    """Requests one replica served on one version: count, replica-caused errors, latency
    histogram over LATENCY_BUCKETS_MS (+1 overflow bucket). Cumulative since it started."""

    requests: int = 0
    errors: int = 0
    buckets: tuple[int, ...] = ()

    def minus(self, earlier: Traffic | None) -> Traffic:
        """The traffic since `earlier`; a replica that restarted (counts went down) counts
        from zero."""
        if earlier is None or earlier.requests > self.requests:
            return self
        before = earlier.buckets or (0,) * len(self.buckets)
        return Traffic(
            self.requests - earlier.requests,
            self.errors - earlier.errors,
            tuple(a - b for a, b in zip(self.buckets, before, strict=False)),
        )


def add(traffic: Iterable[Traffic]) -> Traffic:
    requests = errors = 0
    buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
    for t in traffic:
        requests += t.requests
        errors += t.errors
        for i, n in enumerate(t.buckets[: len(buckets)]):
            buckets[i] += n
    return Traffic(requests, errors, tuple(buckets))


def p99_ms(t: Traffic) -> float:
    """The upper bound of the bucket holding the 99th percentile (inf past the last)."""
    total = sum(t.buckets)
    if total == 0:
        return 0.0
    rank, seen = math.ceil(total * 0.99), 0
    for i, n in enumerate(t.buckets):
        seen += n
        if seen >= rank:
            return LATENCY_BUCKETS_MS[i] if i < len(LATENCY_BUCKETS_MS) else math.inf
    return math.inf


class Rollout(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A rollout as Redis holds it (`cb:{ns}:rollout`)."""

    id: str
    version: int
    sha256: str
    epoch: str
    base: int  # head when it started: promotion moves head from here, or not at all
    stages: tuple[Stage, ...]
    guard: Guard = Guard()
    stage: int = 0  # index of the current stage
    state: RolloutState = RolloutState.RUNNING
    members: tuple[str, ...] = ()  # replicas chosen for share stages so far (cumulative)
    author: str = ""
    message: str = ""
    started_at: float = 0.0
    stage_started_at: float = 0.0
    ended_at: float | None = None
    reason: str = ""

    @property
    def running(self) -> bool:
        return self.state is RolloutState.RUNNING

    def label_selectors(self) -> list[dict[str, str]]:
        """The label selectors of the stages so far (stages are cumulative)."""
        return [s.selector.labels for s in self.stages[: self.stage + 1] if s.selector.labels]

    def selects(self, replica_id: str, labels: Mapping[str, str]) -> bool:
        if not self.running:
            return False
        if replica_id in self.members:
            return True
        return any(
            all(labels.get(k) == v for k, v in sel.items()) for sel in self.label_selectors()
        )


def share_members(
    stage: Stage,
    live: Iterable[str],
    already: Sequence[str] = (),
    *,
    by_labels: Collection[str] = (),
) -> tuple[str, ...]:
    """Members after a share stage starts: enough replicas, lowest hash of their id first,
    that ceil(share * live) run the version, counting those an earlier stage's labels
    already select (`by_labels`) and those chosen before (a stage never shrinks the set)."""
    share = stage.selector.share
    if share is None:
        return tuple(already)
    ranked = sorted(set(live), key=rank)
    want = math.ceil(len(ranked) * share / 100 - 1e-9)
    chosen = list(already)
    selected = {c for c in chosen if c in ranked} | (set(by_labels) & set(ranked))
    for rid in ranked:
        if len(selected) >= want:
            break
        if rid not in selected:
            chosen.append(rid)
            selected.add(rid)
    return tuple(chosen)


def rank(replica_id: str) -> int:
    """A replica's stable place in share selections."""
    return int.from_bytes(hashlib.sha256(replica_id.encode()).digest()[:8], "big")


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """The guard's answer for the current stage: 'abort', 'pass' (may advance once baked)
    or 'wait' (not enough traffic yet), with the figures behind it."""

    decision: str
    reason: str
    stage_requests: int = 0
    stage_error_rate: float = 0.0
    stage_p99_ms: float = 0.0
    baseline_requests: int = 0
    baseline_error_rate: float = 0.0
    baseline_p99_ms: float = 0.0


class Assessment(msgspec.Struct, frozen=True, kw_only=True):
    """What the guard makes of the current stage now, and who it looked at."""

    action: str  # 'abort' | 'advance' | 'promote' | 'wait'
    reason: str
    verdict: Verdict | None = None
    stage_replicas: tuple[str, ...] = ()
    baseline_replicas: tuple[str, ...] = ()
    baked_s: float = 0.0


def judge(guard: Guard, stage: Traffic, baseline: Traffic, *, label: str) -> Verdict:
    """Judge a stage's traffic against the baseline's over the same window."""
    s_rate = stage.errors / stage.requests if stage.requests else 0.0
    b_rate = baseline.errors / baseline.requests if baseline.requests else 0.0
    s_p99, b_p99 = p99_ms(stage), p99_ms(baseline)
    figures = Verdict(
        decision="wait",
        reason="",
        stage_requests=stage.requests,
        stage_error_rate=s_rate,
        stage_p99_ms=s_p99,
        baseline_requests=baseline.requests,
        baseline_error_rate=b_rate,
        baseline_p99_ms=b_p99,
    )

    def verdict(decision: str, reason: str) -> Verdict:
        return msgspec.structs.replace(figures, decision=decision, reason=reason)

    if stage.requests < guard.min_requests:
        return verdict("wait", f"{label}: {stage.requests} of {guard.min_requests} requests seen")
    versus = f"vs baseline {b_rate:.0%}" if baseline.requests else "(no baseline traffic)"
    window = f"over {stage.requests} requests"
    limit = guard.max_error_rate
    if baseline.requests >= guard.min_requests:
        limit = max(limit, b_rate * guard.max_error_ratio)
    if s_rate > limit:
        return verdict("abort", f"{label} error rate {s_rate:.0%} {versus} {window}")
    if (
        baseline.requests >= guard.min_requests
        and s_p99 > b_p99 * guard.max_p99_ratio
        and s_p99 - b_p99 > guard.p99_slack_ms
    ):
        return verdict(
            "abort", f"{label} latency p99 {s_p99:g} ms vs baseline {b_p99:g} ms {window}"
        )
    return verdict("pass", f"{label} error rate {s_rate:.0%} {versus}, p99 {s_p99:g} ms {window}")


def parse_selector(text: str) -> Selector:
    """`10%` or `tier=canary,zone=eu`; a ValueError names what is wrong."""
    text = text.strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            raise ValueError(f"selector {text!r}: not a percentage") from None
        if not 0 < share <= 100:
            raise ValueError(f"selector {text!r}: a share is above 0% and at most 100%")
        return Selector(share=share)
    return Selector(labels=parse_labels(text, where=f"selector {text!r}"))


def parse_labels(text: str, *, where: str = "labels") -> dict[str, str]:
    """`k=v,k2=v2` into a mapping; a ValueError names the bad part."""
    labels: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise ValueError(f"{where}: {part!r} is not key=value")
        check_label(key, f"{where}: label name")
        check_label(value, f"{where}: label {key!r} value")
        labels[key] = value
    if not labels and text.strip():
        raise ValueError(f"{where}: no key=value pairs")
    return labels


def check_label(text: str, where: str) -> str:
    if not _LABEL.fullmatch(text):
        raise ValueError(f"{where} {text!r}: {LABEL_RULE}")
    return text


_doc_encoder = msgspec.json.Encoder(order="deterministic")
_doc_decoder = msgspec.json.Decoder(Rollout)


def rollout_args(r: Rollout) -> tuple[str, bytes, str, str]:
    """What the scripts store of a rollout: id, the whole doc, and the two fields the
    replicas' read matches in Lua (label selectors one per line, members framed by `\\n`)."""
    match = "\n".join(
        ",".join(f"{k}={v}" for k, v in sorted(s.items())) for s in r.label_selectors()
    )
    members = "\n" + "\n".join(r.members) + "\n" if r.members else ""
    return r.id, _doc_encoder.encode(r), match, members


def rollout_from_fields(fields: Mapping[str, str | bytes]) -> Rollout:
    """The rollout from its Redis hash: the doc, with what the scripts own laid over it.
    A ValueError (msgspec's, with the path) when the hash is malformed."""

    def text(name: str) -> str:
        v = fields.get(name, "")
        return v.decode() if isinstance(v, bytes) else v

    doc = _doc_decoder.decode(text("doc"))
    return msgspec.structs.replace(
        doc,
        id=text("id"),
        version=int(text("version")),
        sha256=text("sha256"),
        epoch=text("epoch"),
        base=int(text("base")),
        stage=int(text("stage")),
        state=RolloutState(text("state")),
    )
