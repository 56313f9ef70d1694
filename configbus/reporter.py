"""A replica's status reports: one task sends them, always the latest state.

Reports never reorder, the sync worker never waits on them, and a burst of changes
coalesces: a change is reported at once while the reporter has credit (`REPORT_BURST`
reports, refilled at one per `REPORT_MIN_GAP_S`), later ones share a report per gap. Each report is one plain HSET
stamped with the Redis server's clock, which the reporter follows from one TIME read per
`CLOCK_REFRESH_S` and the local monotonic clock in between: liveness is judged on the
server's clock, whatever the replica's wall clock does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from configbus.errors import StoreError
from configbus.records import ReplicaStatus
from configbus.store import Store

log = logging.getLogger("configbus.watcher")

ROLLOUT_HEARTBEAT_S = 0.5  # a rollout's guard judges from these reports: keep them fresh
REPORT_MIN_GAP_S = 0.2  # under a burst, changes closer than this share one report
REPORT_BURST = 3.0
# A report that failed is tried again soon (doubling up to the heartbeat): after a failover
# the admin's first publish waits for the replicas' reports (configbus.durability.FENCE).
RETRY_FIRST_S = 0.1
CLOCK_REFRESH_S = 60.0


class Reporter:
    def __init__(
        self,
        store: Store,
        status: Callable[[], ReplicaStatus],
        *,
        interval_s: float,
        rollout_running: Callable[[], bool],
        min_gap_s: float = REPORT_MIN_GAP_S,
    ) -> None:
        self._store = store
        self._status = status
        self._interval_s = interval_s
        self._rollout_running = rollout_running
        self._min_gap_s = min_gap_s
        self._wake = asyncio.Event()
        self._clock: tuple[float, float] | None = None  # (server time, monotonic) read together
        self._credit = REPORT_BURST
        self._credit_at = time.monotonic()
        self._retry_s: float | None = None  # after a failed report: how soon to try again
        self.sent = 0

    def wake(self) -> None:
        """Something changed: report soon (coalesced with whatever else changes)."""
        self._wake.set()

    async def run(self, running: Callable[[], bool]) -> None:
        while running():
            interval = self._interval_s
            if self._rollout_running():
                interval = min(interval, ROLLOUT_HEARTBEAT_S)
            if self._retry_s is not None:
                interval = min(interval, self._retry_s)
            # A timer that sets the same event: cheaper, once per report, than a timeout scope.
            timer = asyncio.get_running_loop().call_later(interval, self._wake.set)
            try:
                await self._wake.wait()
            finally:
                timer.cancel()
            now = time.monotonic()
            self._credit = min(
                REPORT_BURST, self._credit + (now - self._credit_at) / self._min_gap_s
            )
            self._credit_at = now
            if self._credit < 1:
                # More changes in the meantime share this report.
                await asyncio.sleep((1 - self._credit) * self._min_gap_s)
                self._credit, self._credit_at = 1.0, time.monotonic()
            self._credit -= 1
            self._wake.clear()
            await self.send()

    async def send(self) -> None:
        try:
            await self._store.report_at(self._status(), await self._server_now())
            self.sent += 1
            self._retry_s = None
            return
        except StoreError as exc:
            self._clock = None  # Redis may have come back as another server
            log.warning("cannot report status: %s", exc)
        except Exception:
            # The reporter must outlive any surprise: a replica that stops reporting looks dead.
            log.exception("cannot report status")
        self._retry_s = min(self._interval_s, 2 * (self._retry_s or RETRY_FIRST_S / 2))

    async def _server_now(self) -> float:
        mono = time.monotonic()
        if self._clock is None or mono - self._clock[1] > CLOCK_REFRESH_S:
            t0 = time.monotonic()
            server = await self._store.server_time()
            t1 = time.monotonic()
            self._clock = (server, (t0 + t1) / 2)
            mono = t1
        return self._clock[0] + (mono - self._clock[1])
