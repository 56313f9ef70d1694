"""A namespace's rollout in Redis: read it, step it (advance, promote, abort), and the lease
that lets one admin at a time drive it.

Starting a rollout is a publish (`Store.publish(rollout=...)`): the version and the rollout
are written in one step. Every later step is one script that checks the rollout is still
the one the caller judged, at the stage it judged, so a step is never applied twice.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from configbus import lua
from configbus.errors import CorruptRecord, RolloutConflict
from configbus.hints import parse_traceparent
from configbus.records import text_of
from configbus.redis_calls import guarded
from configbus.rollout import Rollout, Traffic, rollout_args, rollout_from_fields
from configbus.store import Store

Step = Literal["advance", "promote", "abort"]

# Traffic per replica, per version (as text), when a stage started: the guard's zero point.
Baseline = dict[str, dict[str, Traffic]]


class _StoredBaseline(msgspec.Struct, frozen=True):
    rollout: str
    stage: int
    replicas: Baseline


_baseline_decoder = msgspec.json.Decoder(_StoredBaseline)
_encoder = msgspec.json.Encoder()


class RolloutStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys
        self._step = store.redis.register_script(lua.ROLLOUT_STEP)
        self._lease = store.redis.register_script(lua.LEASE)

    async def get(self) -> Rollout | None:
        """The namespace's rollout (running or the last one ended), None when there is none."""
        fields = await guarded(self.store.redis.hgetall(self.keys.rollout), "read rollout")
        if not fields:
            return None
        try:
            return rollout_from_fields({text_of(k): v for k, v in fields.items()})
        except (ValueError, KeyError, msgspec.DecodeError) as exc:
            raise CorruptRecord(f"{self.keys.rollout}: unreadable rollout ({exc})") from None

    async def step(
        self,
        action: Step,
        new: Rollout,
        *,
        expected_stage: int | None,
        holder: str = "",
        traceparent: str | None = None,
    ) -> str:
        """Write `new` (the caller's next state of the rollout) if the stored rollout is
        still running at `expected_stage` (and `holder` holds the lease, when given).
        Answers the new state; RolloutConflict names what moved instead. `traceparent`:
        the step's trace, carried in the hint so the replicas' applies join it."""
        rid, doc, match, members = rollout_args(new)
        tp = traceparent if traceparent and parse_traceparent(traceparent) else ""
        args: list[Any] = [
            action, rid, "" if expected_stage is None else str(expected_stage), holder,
            doc, match, members, self.keys.changes, str(new.stage), tp,
        ]  # fmt: skip
        keys = [self.keys.rollout, self.keys.head, self.keys.rollout_lease, self.keys.rev]
        res = await guarded(self._step(keys=keys, args=args), f"rollout {action}")
        outcome, detail = text_of(res[0]), text_of(res[1])
        if outcome in ("running", "promoted", "aborted"):
            return outcome
        raise RolloutConflict(
            {
                "gone": f"rollout {rid} is no longer the namespace's rollout",
                "ended": f"rollout {rid} already ended ({detail})",
                "moved": f"rollout {rid} is at stage {detail}, not {expected_stage}",
                "not_leader": f"this admin does not hold the lease of rollout {rid}",
                "head_moved": f"head moved from version {detail} since rollout {rid} started",
            }.get(outcome, f"rollout {rid}: {outcome}")
        )

    async def lease(self, holder: str, ttl_s: float) -> bool:
        """Take or extend the lease to drive this namespace's rollout; True when ours."""
        res = await guarded(
            self._lease(keys=[self.keys.rollout_lease], args=[holder, int(ttl_s * 1000)]),
            "rollout lease",
        )
        return text_of(res) == holder

    async def save_baseline(self, rollout_id: str, stage: int, replicas: Baseline) -> None:
        data = _encoder.encode(_StoredBaseline(rollout_id, stage, replicas))
        await guarded(self.store.redis.set(self.keys.rollout_baseline, data), "save baseline")

    async def load_baseline(self, rollout_id: str, stage: int) -> Baseline | None:
        raw = await guarded(self.store.redis.get(self.keys.rollout_baseline), "read baseline")
        if not raw:
            return None
        try:
            stored = _baseline_decoder.decode(raw)
        except msgspec.DecodeError:
            return None  # judged from a fresh zero point instead
        if stored.rollout != rollout_id or stored.stage != stage:
            return None
        return stored.replicas
