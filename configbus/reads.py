"""Where a replica reads: a Redis read replica when it has one, the primary otherwise.

Redis replicates every write and every PUBLISH to its replicas, so a replica can follow a
namespace (read head, fetch records, hear hints) from a read replica while its writes
(status reports, counters) go to the primary. A read replica may lag or die; the rules:

- every change bumps the namespace's `rev`, hints name it, and a reader remembers the
  newest (epoch, rev) it has seen. A read replica that answers with an older rev, or
  another epoch, is behind: read it again after a short pause, then ask the primary.
- a read replica can lag without a hint saying so (its link to the primary broke: it hears
  nothing either), so each reconcile tick first asks the primary for its (epoch, rev): two
  tiny GETs, the only reads a replica makes of the primary while its read replica is fine.
- a read replica that fails (down, paused: reads time out fast) is set aside for
  `SET_ASIDE_S`; reads and the change channel go to the primary meanwhile.
- only the primary's answer may take a replica to an older rev (a store restored from an
  old backup) or another lineage that no hint announced.

So a lagging or dead read replica delays a replica by at most a reconcile interval and
never makes it apply an older version over a newer one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import redis.asyncio as aioredis

from configbus.errors import StoreError, StoreUnavailable
from configbus.records import SyncRead, text_of
from configbus.store import Store

log = logging.getLogger("configbus.reads")

LAG_RETRIES = 2
LAG_PAUSE_S = 0.02
SET_ASIDE_S = 5.0

Seen = tuple[str | None, int]  # (epoch, rev)


class ReadPath:
    def __init__(self, primary: Store, replica: Store | None = None) -> None:
        self.primary = primary
        self.replica = replica
        self.seen: Seen | None = None
        self._aside_until = 0.0
        self.lagging_reads = 0  # read-replica answers found behind (for tests and metrics)
        self.primary_reads = 0

    @property
    def channel_redis(self) -> aioredis.Redis:
        """Where the change channel should listen now."""
        return self.primary.redis if self._replica_aside() else self._reader().redis

    def _reader(self) -> Store:
        return self.replica or self.primary

    def _replica_aside(self) -> bool:
        return self.replica is None or time.monotonic() < self._aside_until

    def heard(self, epoch: str, rev: int) -> None:
        """A hint named this point of the namespace's history."""
        if not epoch or not rev:
            return
        if self.seen is None or self.seen[0] != epoch or rev > self.seen[1]:
            self.seen = (epoch, rev)

    def behind(self, read: SyncRead) -> bool:
        seen = self.seen
        return seen is not None and (read.epoch != seen[0] or read.rev < seen[1])

    async def sync_read(
        self,
        *,
        held: tuple[str, int, str, bool] | None,
        rejected: tuple[int, str] | None,
        replica_id: str,
        labels: Mapping[str, str],
        probe: bool = False,
    ) -> SyncRead:
        """What to run (see `Store.sync_read`), from the read replica when it is not behind
        what this reader has seen, else from the primary. `probe`: learn the primary's
        (epoch, rev) first (the reconcile tick)."""
        if probe and self.replica is not None and not self._replica_aside():
            await self._probe()
        kw = {"held": held, "rejected": rejected, "replica_id": replica_id, "labels": labels}
        if self.replica is not None and not self._replica_aside():
            for attempt in range(1 + LAG_RETRIES):
                try:
                    read = await self.replica.sync_read(**kw)  # type: ignore[arg-type]
                except StoreUnavailable as exc:
                    log.warning("read replica unavailable, reading from the primary: %s", exc)
                    self._aside_until = time.monotonic() + SET_ASIDE_S
                    break
                except StoreError:
                    raise  # a corrupt record is the same on the primary
                if not self.behind(read):
                    self._accept(read)
                    return read
                self.lagging_reads += 1
                if attempt < LAG_RETRIES:
                    await asyncio.sleep(LAG_PAUSE_S)
        self.primary_reads += 1
        read = await self.primary.sync_read(**kw)  # type: ignore[arg-type]
        self.seen = (read.epoch, read.rev)  # the truth, even when it went back
        return read

    async def _probe(self) -> None:
        keys = self.primary.keys
        try:
            epoch, rev = await self.primary.redis.mget([keys.epoch, keys.rev])
        except Exception as exc:  # the primary down must not stop reads from the replica
            log.warning("cannot probe the primary: %s", exc)
            return
        if epoch is not None:
            self.heard(text_of(epoch), int(rev or 0))

    def _accept(self, read: SyncRead) -> None:
        if self.seen is None or read.rev > self.seen[1]:
            self.seen = (read.epoch, read.rev)
