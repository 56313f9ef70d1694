"""A replica's reporter tries a failed report again soon (after a failover the admin's
first publish waits for the replicas' reports on the new primary), not a heartbeat later."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from configbus.errors import StoreUnavailable
from configbus.records import ReplicaStatus
from configbus.reporter import Reporter


class FlakyStore:
    """Refuses the first `fail` reports, as a demoted primary (READONLY) would."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.reports: list[float] = []

    async def report_at(self, status: ReplicaStatus, last_seen: float) -> None:
        self.reports.append(time.monotonic())
        if len(self.reports) <= self.fail:
            raise StoreUnavailable("report status: Redis unavailable: READONLY")

    async def server_time(self) -> float:
        return time.time()


async def test_a_failed_report_is_retried_within_a_fraction_of_the_heartbeat() -> None:
    store: Any = FlakyStore(fail=2)
    reporter = Reporter(
        store,
        lambda: ReplicaStatus(replica_id="r1", state="applied", version=3),
        interval_s=5.0,
        rollout_running=lambda: False,
    )
    running = True
    task = asyncio.create_task(reporter.run(lambda: running))
    try:
        reporter.wake()
        async with asyncio.timeout(2):
            while reporter.sent == 0:  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.01)
        first, *_, last = store.reports
        assert len(store.reports) == 3
        assert last - first < 1.0  # two retries, 0.1 s and 0.2 s apart, not 5 s each
    finally:
        running = False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
