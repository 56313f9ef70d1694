"""Requests served per config version, counted in process for the heartbeat: what a
rollout's guard compares between a stage and the baseline. No lock and no Redis: one
event loop counts, the watcher's reporter reads a copy."""

from __future__ import annotations

from bisect import bisect_left

from configbus.rollout import LATENCY_BUCKETS_MS, Traffic

# Versions kept: the one served, the one before (a rollout's baseline), and a spare.
KEEP_VERSIONS = 3


class TrafficCounter:
    def __init__(self) -> None:
        # version -> [requests, errors, one count per latency bucket (+ overflow)]
        self._rows: dict[int, list[int]] = {}

    def record(self, version: int, seconds: float, failed: bool) -> None:
        row = self._rows.get(version)
        if row is None:
            row = self._add(version)
        row[0] += 1
        if failed:
            row[1] += 1
        row[2 + bisect_left(LATENCY_BUCKETS_MS, seconds * 1000.0)] += 1

    def _add(self, version: int) -> list[int]:
        while len(self._rows) >= KEEP_VERSIONS:
            del self._rows[min(self._rows)]
        row = self._rows[version] = [0] * (3 + len(LATENCY_BUCKETS_MS))
        return row

    def snapshot(self) -> dict[str, Traffic]:
        return {str(v): Traffic(r[0], r[1], tuple(r[2:])) for v, r in self._rows.items()}
