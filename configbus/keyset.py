"""The replica side of the key collection: hold it in memory, follow its changes.

    start: load whole (HSCAN in batches, then the log from the revision read first), or
           the last-known-good file when Redis cannot serve
    hint:  the change it carries, when it is the next one (no read); else a read of the
           changes after the held revision (one script); a gap, another epoch or a
           revision gone backwards (a store restored or replaced): reload whole
    tick:  the same read, so a lost hint is found within the reconcile interval

One worker applies everything, one step at a time, so lookups never see half a change.
Lookups (`find`) are one dict read: they run on every request.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from configbus.clientkeys import ClientKey, KeyChange, parse_key_hint
from configbus.errors import StoreError
from configbus.keystore import KeyStore
from configbus.snapshot import write_atomic

log = logging.getLogger("configbus.keys")

SNAPSHOT_MIN_GAP_S = 5.0  # a busy collection rewrites its file at most this often
MAX_RELOAD_ROUNDS = 5


class KeySnapshot(msgspec.Struct, frozen=True):
    epoch: str | None
    rev: int
    entries: list[ClientKey]


_snapshot_encode = msgspec.json.Encoder().encode
_snapshot_decoder = msgspec.json.Decoder(KeySnapshot)


class KeyTable:
    """Entries by id and by every key hash that reaches them (a rotated-out key's too)."""

    def __init__(self) -> None:
        self.by_id: dict[str, ClientKey] = {}
        self.by_hash: dict[str, ClientKey] = {}
        self.epoch: str | None = None
        self.rev = 0

    def __len__(self) -> int:
        return len(self.by_id)

    def find(self, sha256: str, now: float) -> ClientKey | None:
        """The entry the key with this hash may use now (None: unknown, revoked, disabled,
        expired, or a rotated-out key past its grace)."""
        e = self.by_hash.get(sha256)
        if e is None or not e.usable(sha256, now):
            return None
        return e

    def put(self, entry: ClientKey) -> None:
        old = self.by_id.get(entry.id)
        if old is not None:
            self._unindex(old)
        self.by_id[entry.id] = entry
        self.by_hash[entry.key_sha256] = entry
        if entry.previous_sha256 is not None:
            self.by_hash[entry.previous_sha256] = entry

    def remove(self, key_id: str) -> None:
        old = self.by_id.pop(key_id, None)
        if old is not None:
            self._unindex(old)

    def _unindex(self, e: ClientKey) -> None:
        for h in (e.key_sha256, e.previous_sha256):
            if h is not None and self.by_hash.get(h) is e:
                del self.by_hash[h]

    def apply(self, change: KeyChange) -> None:
        if change.entry is None:
            self.remove(change.id)
        else:
            self.put(change.entry)
        self.rev = change.rev

    def fill(self, entries: Iterable[ClientKey]) -> None:
        for e in entries:
            self.put(e)


class KeyFollower:
    """Keeps `table` equal to the namespace's key collection."""

    def __init__(
        self,
        store: KeyStore,
        *,
        reconcile_interval_s: float = 30.0,
        snapshot_path: Path | None = None,
        batch: int = 2_000,
    ) -> None:
        self.store = store
        self.table = KeyTable()
        self.loaded = False  # from Redis (a table from the file alone is stale)
        self.stale = False
        self.channel = store.layout.changes
        self.on_change: Callable[[], None] = lambda: None  # the status reporter's wake
        self._interval = reconcile_interval_s
        self._snapshot_path = snapshot_path
        self._batch = batch
        self._inline: list[KeyChange] = []
        self._wake = asyncio.Event()
        self._full = False
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._written_rev: tuple[str | None, int] | None = None
        self._write_task: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.reloads = 0
        self.reads = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._running = True
        try:
            await self._reload()
        except Exception as exc:  # a replica must start whatever Redis does: retried below
            # (StoreError, and what redis-py lets through when a connection breaks during
            # its handshake, such as uvloop's RuntimeError on a closed transport.)
            log.warning("cannot load the key collection: %s", exc)
            await self._load_file()
            self._full = True
            self._wake.set()
        self._tasks = [
            asyncio.create_task(self._worker(), name="configbus-keys"),
            asyncio.create_task(self._tick(), name="configbus-keys-reconcile"),
        ]

    async def stop(self) -> None:
        self._running = False
        tasks = [*self._tasks, *([self._write_task] if self._write_task else [])]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []

    def status(self) -> tuple[str | None, int]:
        return self.table.epoch, self.table.rev

    async def wait_for(self, rev: int) -> None:
        """Wait until the held revision is at least `rev` (bound it with a timeout)."""
        if self.table.rev >= rev:
            return
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((rev, fut))
        await fut

    # -- triggers ----------------------------------------------------------------------

    def on_hint(self, data: bytes) -> None:
        try:
            hint, change = parse_key_hint(data)
        except msgspec.DecodeError:
            self.trigger()
            return
        t = self.table
        pending = self._inline[-1].rev if self._inline else t.rev
        if change is not None and hint.epoch == t.epoch and change.rev == pending + 1:
            self._inline.append(change)
            self._wake.set()
        elif hint.epoch != t.epoch or hint.rev > pending:
            self.trigger()

    def on_subscribed(self) -> None:
        self.trigger()  # messages may have been missed while unsubscribed

    def trigger(self) -> None:
        self._inline = []
        self._wake.set()

    # -- the work ----------------------------------------------------------------------

    async def _worker(self) -> None:
        backoff = 0.05
        while self._running:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._sync()
                backoff = 0.05
                continue
            except StoreError as exc:
                log.warning("key collection sync: %s", exc)
            except Exception:
                log.exception("key collection sync failed unexpectedly")
            # Try again soon (capped, jittered): a replica must not wait a whole reconcile
            # interval to catch up once Redis is back.
            self.stale = True
            self._full = self._full or not self.loaded
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, 2.0)
            self._wake.set()

    async def _tick(self) -> None:
        while self._running:
            await asyncio.sleep(self._interval * random.uniform(0.8, 1.0))
            self.trigger()

    async def _sync(self) -> None:
        inline, self._inline = self._inline, []
        t = self.table
        if inline and not self._full:
            for c in inline:
                if c.rev != t.rev + 1:
                    break
                t.apply(c)
            else:
                self._changed()
                return
        if self._full:
            await self._reload()
            return
        self.reads += 1
        state, changes = await self.store.changes_since(t.rev)
        if state.epoch != t.epoch or state.rev < t.rev or changes is None:
            # Another lineage, a store that went back, or too far behind for the log.
            await self._reload()
            return
        for c in changes:
            t.apply(c)
        self.stale = False
        if changes:
            self._changed()

    async def _reload(self) -> None:
        """Load whole: entries by HSCAN, then the changes made meanwhile from the log."""
        for _ in range(MAX_RELOAD_ROUNDS):
            state = await self.store.state()
            fresh = KeyTable()
            async for batch in self.store.scan(self._batch):
                fresh.fill(batch)
            fresh.epoch, fresh.rev = state.epoch, state.rev
            after, changes = await self.store.changes_since(state.rev)
            if after.epoch != state.epoch or changes is None:
                continue  # replaced, or changed faster than the log holds: again
            for c in changes:
                fresh.apply(c)
            self.table, self._full, self.loaded, self.stale = fresh, False, True, False
            self.reloads += 1
            self._changed()
            return
        raise StoreError("the key collection changed too fast to load; will retry")

    def _changed(self) -> None:
        rev = self.table.rev
        waiters, self._waiters = self._waiters, []
        for want, fut in waiters:
            if rev >= want:
                if not fut.done():
                    fut.set_result(None)
            else:
                self._waiters.append((want, fut))
        self.on_change()
        self._save_soon()

    # -- the last-known-good file ------------------------------------------------------

    def _save_soon(self) -> None:
        if self._snapshot_path is None or self._write_task is not None:
            return
        self._write_task = asyncio.create_task(self._save())

    async def _save(self) -> None:
        assert self._snapshot_path is not None
        try:
            while True:
                t = self.table
                now = (t.epoch, t.rev)
                if now == self._written_rev:
                    return
                data = _snapshot_encode(KeySnapshot(t.epoch, t.rev, list(t.by_id.values())))
                await asyncio.to_thread(write_atomic, self._snapshot_path, data)
                self._written_rev = now
                await asyncio.sleep(SNAPSHOT_MIN_GAP_S)
        except Exception as exc:
            log.error("cannot write the key collection file %s: %s", self._snapshot_path, exc)
        finally:
            self._write_task = None

    async def _load_file(self) -> None:
        path = self._snapshot_path
        if path is None:
            return
        try:
            raw = await asyncio.to_thread(path.read_bytes)
            snap = _snapshot_decoder.decode(raw)
        except FileNotFoundError:
            return
        except (OSError, msgspec.DecodeError) as exc:
            log.error("ignoring key collection file %s: %s", path, exc)
            return
        fresh = KeyTable()
        fresh.fill(snap.entries)
        fresh.epoch, fresh.rev = snap.epoch, snap.rev
        self.table, self.stale = fresh, True
        self._written_rev = (snap.epoch, snap.rev)
        log.warning(
            "serving %d client keys (revision %d) from %s until Redis answers",
            len(fresh),
            snap.rev,
            path,
        )


def key_snapshot_path(doc_snapshot: Path | None) -> Path | None:
    """Where the key collection's file goes: beside the document's."""
    if doc_snapshot is None:
        return None
    return doc_snapshot.with_name(doc_snapshot.name + ".keys")
