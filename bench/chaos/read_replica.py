"""The soak's Redis read replica, and the fault that kills it.

`replica-1` and `replica-2` read and listen through a `redis-server --replicaof` of the
soak's Redis (`CONFIGBUS_REDIS_READ_URL`), `replica-3` through the primary, so both paths
run through every fault. Killing the read replica must cost its replicas no more than a
reconcile interval: they read through the primary until it is back (empty at first, then
resynced), and never go back a version meanwhile.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from time import monotonic as now
from typing import TYPE_CHECKING, Any

from configbus.tooling.localredis import LocalRedis

if TYPE_CHECKING:
    from bench.chaos.faults import Faults

READERS = ("replica-1", "replica-2")
DOWN_S = 1.5


class ReadReplica:
    def __init__(self, run_dir: Path, primary: LocalRedis) -> None:
        self.redis = LocalRedis(
            dir=run_dir / "redis-read", extra_args=["--replicaof", "127.0.0.1", str(primary.port)]
        )

    @property
    def url(self) -> str:
        return self.redis.url

    def env(self, rid: str) -> dict[str, str]:
        return {"CONFIGBUS_REDIS_READ_URL": self.url} if rid in READERS else {}

    async def start(self) -> None:
        self.redis.spawn()
        await asyncio.to_thread(self.redis.wait_ready)

    async def stop(self) -> None:
        await asyncio.to_thread(self.redis.stop, hard=True)


async def read_replica_kill(faults: Faults) -> dict[str, Any]:
    """Kill the read replica, publish while it is down, bring it back empty, publish again."""
    rr = faults.fleet.read_replica
    await rr.stop()
    ev = await faults.publisher.publish_now()
    down_took = await faults.watch.converge(now())
    await asyncio.sleep(DOWN_S)
    rr.redis.wipe()
    await rr.start()
    ev2 = await faults.publisher.publish_now()
    back_took = await faults.watch.converge(now())
    took = None if down_took is None or back_took is None else max(down_took, back_took)
    return {
        "version_while_down": ev[1],
        "on_head_while_down_s": down_took,
        "version_after": ev2[1],
        "on_head_after_s": back_took,
        "back_on_head_s": took,
    }
