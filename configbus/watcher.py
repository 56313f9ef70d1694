"""The replica side of the bus: follow a namespace's head and swap in each good version.

Triggers (a channel message, a (re)subscribe, the reconcile tick, start) only *schedule* a
sync; one worker task runs syncs one at a time, so syncs never overlap and a burst of
publishes coalesces into one jump to the newest head. A sync is

    learn the target and fetch its record (one read), or take the record a plain publish's
    hint carries (no read) → verify checksum → decode + validate → build → swap

and the swap is one assignment of `current`: readers never lock, requests in flight keep
the `Applied` they read. A version that fails any step is reported (NACK) and remembered,
so it is not fetched and rejected again on every tick; the old value keeps serving.

Reads may go to a Redis read replica (`reads`), with the primary as the fallback when it
lags or dies (see `configbus.reads`); status reports always go to the primary (see
`configbus.reporter`).

Works with any msgspec schema: pass your own `decode` (bytes → document) and `build`
(document, previous value → the value your service reads).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Generic, TypeVar

import msgspec
from prometheus_client import CollectorRegistry

from configbus.applied import Applied, SyncOutcome, WatcherState, _Rejected
from configbus.channel import ChannelListener
from configbus.errors import CorruptRecord, StoreError, StoreUnavailable
from configbus.hints import inline_applies, is_news, parse_hint
from configbus.keyset import KeyFollower
from configbus.metrics import WatcherMetrics
from configbus.reads import ReadPath
from configbus.reporter import ROLLOUT_HEARTBEAT_S, Reporter
from configbus.rollout import Traffic
from configbus.settings import BusSettings
from configbus.signing import RecordSigner
from configbus.snapshot import load_snapshot, write_snapshot
from configbus.store import ReplicaStatus, Store, VersionRecord
from configbus.tracing import Tracer, context_from_traceparent

log = logging.getLogger("configbus.watcher")

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_MAX_BACKOFF_S = 2.0
__all__ = ["ROLLOUT_HEARTBEAT_S", "Applied", "SyncOutcome", "Watcher", "WatcherState"]


def _held(cur: Applied[Any] | None) -> tuple[str, int] | None:
    return (cur.epoch, cur.version) if cur is not None else None


class Watcher(Generic[T, R]):
    """Keeps `current` equal to the newest valid version of one namespace."""

    def __init__(
        self,
        store: Store,
        *,
        decode: Callable[[bytes], T],
        build: Callable[[T, R | None], R | Awaitable[R]] | None = None,
        settings: BusSettings | None = None,
        registry: CollectorRegistry | None = None,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        labels: Mapping[str, str] | None = None,
        traffic: Callable[[], dict[str, Traffic]] | None = None,
        reads: Store | None = None,
        tracer: Tracer | None = None,
        keys: KeyFollower | None = None,
        signer: RecordSigner | None = None,
        decode_signed: Callable[[bytes], T] | None = None,
    ) -> None:
        """`store` is the primary (status goes there); `reads`, a store on a read replica
        of it, when reads should go there instead. `keys`: the namespace's client key
        collection, followed on the same subscription and acknowledged in the same status.
        `decode_signed`: a cheaper `decode` for records whose signature `signer` verifies
        (the admin validated them: see `configbus.signing`)."""
        self.store = store
        self.reads = ReadPath(store, reads)
        self.settings = settings or BusSettings(namespace=store.namespace)
        self.metrics = WatcherMetrics(registry, store.namespace)
        self.replica_id = self.settings.replica_id or f"watcher-{id(self):x}"
        self.labels = dict(labels or {})
        self._traffic = traffic
        self._rollout_running = False
        self._decode = decode
        self._signed = (signer, decode_signed) if signer and decode_signed else None
        self._build = build
        self._max_backoff_s = max_backoff_s
        self._current: Applied[R] | None = None
        self._listeners: list[Callable[[Applied[R], Applied[R] | None], None]] = []
        self._rejected: _Rejected | None = None
        self._wake = asyncio.Event()
        self._inline: VersionRecord | None = None  # a hinted record waiting for the worker
        self._tracer = tracer
        # The publish behind the newest hint, (version, traceparent): its apply joins that trace.
        self._hinted_trace: tuple[int, str] | None = None
        self.last_propagation_s: float | None = None
        self._probe = False  # the next read first asks the primary how far it is
        # When the store last told us what to run (monotonic): a read, or a hinted record
        # applied. The reconcile tick is due a reconcile interval after it.
        self._confirmed = time.monotonic()
        self.reporter = Reporter(
            store,
            self.status,
            interval_s=self.settings.heartbeat_interval_s,
            rollout_running=lambda: self._rollout_running,
        )
        # wait_for() callers: woken by the swap itself, so an apply creates no task for them.
        self._waiters: set[asyncio.Future[None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._state = WatcherState.NEW
        self._syncing = False
        self.keys = keys
        channels: dict[str, Callable[[bytes], None]] = {store.keys.changes: self._on_hint}
        if keys is not None:
            channels[keys.channel] = keys.on_hint
            keys.on_change = self.reporter.wake
        self._channel = ChannelListener(
            lambda: self.reads.channel_redis,
            channels,
            on_subscribed=self._on_subscribed,
            running=lambda: self._state is WatcherState.RUNNING,
            max_backoff_s=max_backoff_s,
        )
        self.sync_count = 0
        self.overlaps = 0  # syncs that started while another ran: must stay 0

    # -- reading -----------------------------------------------------------------------

    @property
    def current(self) -> Applied[R] | None:
        return self._current

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def subscribed(self) -> bool:
        """The change channel is live (else only reconcile finds news)."""
        return self._channel.subscribed

    @property
    def state(self) -> WatcherState:
        return self._state

    def add_listener(self, fn: Callable[[Applied[R], Applied[R] | None], None]) -> None:
        """Call fn(new, old) after each swap (in the watcher's task; keep it quick)."""
        self._listeners.append(fn)

    def status(self) -> ReplicaStatus:
        cur, rej = self._current, self._rejected
        keys_epoch, keys_rev = self.keys.status() if self.keys is not None else (None, 0)
        return ReplicaStatus(
            replica_id=self.replica_id,
            state="rejected" if rej else ("applied" if cur else "pending"),
            version=cur.version if cur else 0,
            epoch=cur.epoch if cur else None,
            sha256=cur.sha256 if cur else None,
            applied_at=cur.applied_at if cur else None,
            stale=cur.stale if cur else False,
            rejected_version=rej.version if rej else None,
            reason=rej.reason if rej else None,
            ttl_s=3 * self.settings.heartbeat_interval_s,
            labels=self.labels,
            staged=cur.staged if cur else False,
            traffic=self._traffic() if self._traffic else {},
            propagation_s=self.last_propagation_s if cur else None,
            keys_epoch=keys_epoch,
            keys_rev=keys_rev,
        )

    async def wait_for(self, predicate: Callable[[Applied[R] | None], bool]) -> Applied[R] | None:
        """Wait until predicate(current) holds (bound it with `asyncio.timeout`)."""
        while not predicate(self._current):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
        return self._current

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._state is not WatcherState.NEW:
            raise RuntimeError(f"watcher is {self._state.value}; a watcher starts once")
        self._state = WatcherState.RUNNING
        await self._load_snapshot()
        if self.keys is not None:
            await self.keys.start()  # serve no request before the keys are known
        self._tasks = [
            asyncio.create_task(self._sync_worker(), name="configbus-sync"),
            asyncio.create_task(self._channel.run(), name="configbus-listen"),
            asyncio.create_task(self._reconcile(), name="configbus-reconcile"),
            asyncio.create_task(
                self.reporter.run(lambda: self._running), name="configbus-reporter"
            ),
        ]
        self.trigger()

    async def stop(self) -> None:
        if self._state is not WatcherState.RUNNING:
            self._state = WatcherState.STOPPED
            return
        self._state = WatcherState.STOPPED
        for t in self._tasks:
            t.cancel()
        # redis-py can turn a cancellation into a ConnectionError that a loop would catch;
        # the loops also check the state, and this wait is bounded either way.
        _, pending = await asyncio.wait(self._tasks, timeout=5)
        if pending:
            log.error("watcher tasks did not stop: %s", [t.get_name() for t in pending])
        self._tasks = []
        if self.keys is not None:
            await self.keys.stop()

    async def __aenter__(self) -> Watcher[T, R]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def trigger(self) -> None:
        """Schedule a sync (coalesces with any already scheduled)."""
        self._inline = None  # a read is due anyway: it finds what the hint said, or newer
        self._wake.set()

    # -- the sync ----------------------------------------------------------------------

    async def sync_once(self) -> SyncOutcome:
        """One sync, now. The worker calls this; tests and tools may too."""
        if self._syncing:
            self.overlaps += 1
        self._syncing = True
        try:
            outcome = await self._sync()
        finally:
            self._syncing = False
        self.sync_count += 1
        self.metrics.count_sync(outcome.value)
        return outcome

    async def _sync(self) -> SyncOutcome:
        record, self._inline = self._inline, None
        cur, rej = self._current, self._rejected
        if (
            record is not None
            and rej is not None
            and (rej.epoch, rej.version) == (record.epoch, record.version)
            and rej.sha256 in ("*", record.sha256)
        ):
            # Already refused (a read found it while its hint was on the way): not again.
            return SyncOutcome.UP_TO_DATE
        if record is not None and inline_applies(record, _held(cur)):
            # A plain publish happened, so no rollout runs: everyone runs head.
            self._rollout_running = False
            self.metrics.head_version.set(record.version)
            outcome = await self._apply(record, record.epoch, verified=True)
            if outcome is SyncOutcome.APPLIED:
                # Head as of its publish: what a read then would have said. Its age counts
                # (a replica's clock behind the server's hides some: a few ms of delivery).
                age = self.last_propagation_s or 0.0
                self._confirm(time.monotonic() - min(age, self.settings.reconcile_interval_s))
            return outcome
        return await self._sync_read()

    def _confirm(self, at: float) -> None:
        self._confirmed = max(self._confirmed, at)

    async def _sync_read(self) -> SyncOutcome:
        cur, rej = self._current, self._rejected
        held = (cur.epoch, cur.version, cur.sha256, cur.staged) if cur else None
        # The rejected version is skipped, not a floor: a newer or older valid target that
        # appears later is still followed.
        rejected = (rej.version, rej.sha256) if rej else None
        asked = time.monotonic()
        try:
            probe, self._probe = self._probe, False
            read = await self.reads.sync_read(
                held=held,
                rejected=rejected,
                replica_id=self.replica_id,
                labels=self.labels,
                probe=probe,
            )
        except StoreUnavailable as exc:
            self.metrics.redis_connected.set(0)
            log.warning("sync: %s", exc)
            # Cut from Redis, a replica cannot tell whether what it serves is still head:
            # say so (status, readiness) until a read confirms it again.
            self._set_stale(True)
            return SyncOutcome.UNAVAILABLE
        except CorruptRecord as exc:
            self.metrics.redis_connected.set(1)
            self._confirm(asked)
            return await self._reject(exc.epoch, exc.version, "*", str(exc))
        except StoreError as exc:
            log.warning("sync: %s", exc)
            return SyncOutcome.UNAVAILABLE
        self.metrics.redis_connected.set(1)
        self._confirm(asked)
        if read.rollout_running != self._rollout_running:
            self._rollout_running = read.rollout_running
            self.reporter.wake()  # the reporter changes pace

        if rej is not None and (read.epoch, read.target) != (rej.epoch, rej.version):
            # What we rejected is no longer what we are asked to run (a rollout aborted, a
            # bad head replaced): say so, whatever comes next.
            self._rejected = None
            self.reporter.wake()

        self.metrics.head_version.set(read.head)
        if read.head == 0:
            # An empty store (new lineage, nothing published yet): keep what we serve.
            self._set_stale(True)
            return SyncOutcome.NO_HEAD
        if read.record is None:
            if cur is not None and cur.epoch == read.epoch:
                # Target older than what we run from head: the store lost versions (restored
                # from an old backup). Keep serving, marked stale, until head moves past it.
                self._set_stale(read.target < cur.version)
                if cur.staged != read.staged and cur.version == read.target:
                    self._set_staged(read.staged)  # promoted: the rollout's version is head
            return SyncOutcome.UP_TO_DATE
        return await self._apply(read.record, read.epoch, staged=read.staged)

    async def _apply(
        self,
        record: VersionRecord,
        head_epoch: str | None,
        *,
        staged: bool = False,
        verified: bool = False,
    ) -> SyncOutcome:
        started = time.perf_counter()
        try:
            if record.epoch != head_epoch:
                raise ValueError(f"record epoch {record.epoch} is not the store's {head_epoch}")
            if not verified:
                record.verify()
            signed = self._signed
            if signed is not None and signed[0].verify(record.sha256, record.sig):
                doc = signed[1](record.body)
            else:
                doc = self._decode(record.body)
            prev = self._current.value if self._current else None
            value: Any = self._build(doc, prev) if self._build else doc
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            return await self._reject(record.epoch, record.version, record.sha256, reason)
        self._swap(record, value, stale=False, staged=staged)
        self.metrics.apply_seconds.observe(time.perf_counter() - started)
        if record.created_at:
            self.last_propagation_s = max(0.0, time.time() - record.created_at)
            self.metrics.propagation_seconds.observe(self.last_propagation_s)
        if self._tracer is not None:
            self._trace_apply(record, started)
        await self._after_apply(record)
        return SyncOutcome.APPLIED

    def _trace_apply(self, record: VersionRecord, started: float) -> None:
        assert self._tracer is not None
        hinted = self._hinted_trace
        parent = None
        if hinted is not None and hinted[0] == record.version:
            parent = context_from_traceparent(hinted[1])
        took_ns = int((time.perf_counter() - started) * 1e9)
        span = self._tracer.start_span(
            "configbus.apply",
            context=parent,
            start_time=time.time_ns() - took_ns,
            attributes={
                "configbus.config_version": record.version,
                "configbus.replica_id": self.replica_id,
                "configbus.namespace": self.store.namespace,
            },
        )
        span.end()

    def _swap(self, record: VersionRecord, value: R, *, stale: bool, staged: bool = False) -> None:
        old = self._current
        new = Applied(
            version=record.version,
            epoch=record.epoch,
            sha256=record.sha256,
            value=value,
            applied_at=time.time(),
            stale=stale,
            staged=staged,
        )
        self._current = new  # the swap: one reference
        self._rejected = None
        self.metrics.applied_version.set(new.version)
        self.metrics.stale.set(1 if stale else 0)
        log.info("applied version %d (epoch %s)", new.version, new.epoch)
        for fn in self._listeners:
            try:
                fn(new, old)
            except Exception:
                log.exception("change listener failed")
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _after_apply(self, record: VersionRecord) -> None:
        path = self.settings.snapshot_path
        if path is not None:
            try:
                await asyncio.to_thread(write_snapshot, path, record)
            except OSError as exc:
                log.error("cannot write last-known-good file %s: %s", path, exc)
        self.reporter.wake()

    async def _reject(
        self, epoch: str | None, version: int | None, sha256: str, reason: str
    ) -> SyncOutcome:
        self.metrics.rejects.inc()
        if epoch is not None and version is not None:
            self._rejected = _Rejected(epoch, version, sha256, reason)
        log.error("rejected version %s: %s", version, reason)
        self.reporter.wake()
        return SyncOutcome.REJECTED

    def _set_stale(self, stale: bool) -> None:
        cur = self._current
        if cur is not None and cur.stale != stale:
            self._current = dataclasses.replace(cur, stale=stale)
            self.metrics.stale.set(1 if stale else 0)
            self.reporter.wake()
            self._wake_waiters()

    def _set_staged(self, staged: bool) -> None:
        cur = self._current
        if cur is not None:
            self._current = dataclasses.replace(cur, staged=staged)
            self.reporter.wake()
            self._wake_waiters()

    async def _load_snapshot(self) -> None:
        path = self.settings.snapshot_path
        loaded = await load_snapshot(path, self._decode, self._build) if path else None
        if loaded is not None:
            self._swap(loaded[0], loaded[1], stale=True)
            log.warning(
                "serving version %d from %s until Redis confirms it", loaded[0].version, path
            )

    # -- the tasks ---------------------------------------------------------------------

    @property
    def _running(self) -> bool:
        return self._state is WatcherState.RUNNING

    async def _sync_worker(self) -> None:
        while self._running:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync_once()
            except Exception:
                log.exception("sync failed unexpectedly")

    async def _reconcile(self) -> None:
        """A read a reconcile interval after the store last told us what to run: a change
        whose hint is lost is found within the interval, and while hints flow (each one a
        read, or a record applied as it was at its publish) no tick reads again."""
        interval = self.settings.reconcile_interval_s
        # Jitter spreads a fleet's reconciles so they do not hit Redis in one instant.
        ticked, wait = time.monotonic(), interval * random.uniform(0.8, 1.0)
        while self._running:
            left = max(ticked, self._confirmed) + wait - time.monotonic()
            if left > 0:
                await asyncio.sleep(left)
                continue  # something may have confirmed meanwhile: look again
            ticked, wait = time.monotonic(), interval * random.uniform(0.8, 1.0)
            self._probe = True
            self.trigger()

    def _on_subscribed(self) -> None:
        # (Re)subscribed, perhaps after missing messages: look at head now. Perhaps to a new
        # server after a failover: report there at once, so the admin's first publish on it
        # numbers above what we run (configbus.durability.FENCE).
        self.trigger()
        self.reporter.wake()
        if self.keys is not None:
            self.keys.on_subscribed()

    def _on_hint(self, data: bytes) -> None:
        try:
            hint, record = parse_hint(data)
        except msgspec.DecodeError:
            self.trigger()  # a hint we cannot read still says "something changed"
            return
        self.reads.heard(hint.epoch, hint.rev)
        if hint.traceparent:
            self._hinted_trace = (hint.version, hint.traceparent)
        cur = self._current
        if record is not None and inline_applies(record, _held(cur)):
            self._inline = record  # the newest wins: hints arrive in order
            self._wake.set()
            return
        if cur is None or is_news(hint, cur.epoch, cur.version, cur.sha256):
            self.trigger()
