"""The versioned document store in Redis: the source of truth every replica reads.

The layout and the record types are in `configbus.records`.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import (
    NoScriptError,
    ResponseError,
)

from configbus import backup, durability, lua
from configbus.auditlog import scan_audit
from configbus.codec import sha256_hex
from configbus.errors import (
    CorruptRecord,
    DamagedNamespace,
    IdempotencyMismatch,
    NotReplicated,
    RolloutRunning,
    VersionConflict,
    VersionNotFound,
)
from configbus.hints import parse_traceparent
from configbus.pinned import PinnedConnection
from configbus.records import (
    DEFAULT_REPLICA_TTL_S,
    AuditEntry,
    Export,
    Head,
    Keys,
    Kind,
    PublishResult,
    RecordMeta,
    ReplicaInfo,
    ReplicaStatus,
    SyncRead,
    VersionRecord,
    parse_record,
    replica_infos,
    stored_version,
    text_of,
)
from configbus.redis_calls import guarded, store_error
from configbus.rollout import Rollout, rollout_args

log = logging.getLogger("configbus.store")

DEFAULT_RETENTION = 100
DEFAULT_IDEMPOTENCY_TTL_S = 24 * 3600
DEFAULT_AUDIT_MAXLEN = 10_000
# Plain publishes with a body up to this size carry it in their hint: replicas apply it
# without a read. Each publish copies the hint to every subscriber into Redis's output buffers.
DEFAULT_INLINE_MAX_BYTES = 32 * 1024

# The record types are re-exported: callers import them from here or from records.
__all__ = [
    "DEFAULT_AUDIT_MAXLEN",
    "DEFAULT_IDEMPOTENCY_TTL_S",
    "DEFAULT_INLINE_MAX_BYTES",
    "DEFAULT_REPLICA_TTL_S",
    "DEFAULT_RETENTION",
    "AuditEntry",
    "Export",
    "Head",
    "Keys",
    "Kind",
    "PublishResult",
    "RecordMeta",
    "ReplicaInfo",
    "ReplicaStatus",
    "Store",
    "VersionRecord",
    "parse_record",
]

_status_encoder = msgspec.json.Encoder()
_HEX = re.compile(r"[0-9a-f]{1,128}")

_REPAIR = "; a publish (PUT, without If-Match) by an admin replaces it"


class Store:
    """One namespace of versioned documents. Bodies are opaque bytes here; checking them is
    the caller's job (the admin before publishing, the watcher before applying)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        *,
        retention: int = DEFAULT_RETENTION,
        idempotency_ttl_s: int = DEFAULT_IDEMPOTENCY_TTL_S,
        audit_maxlen: int = DEFAULT_AUDIT_MAXLEN,
        inline_max_bytes: int = DEFAULT_INLINE_MAX_BYTES,
        min_replicas_to_ack: int = 0,
        ack_timeout_ms: int = durability.DEFAULT_ACK_TIMEOUT_MS,
        failover_wait_s: float = durability.DEFAULT_FAILOVER_WAIT_S,
    ) -> None:
        if retention < 1:
            raise ValueError("retention must be at least 1 (head is never trimmed)")
        if min_replicas_to_ack and not hasattr(redis, "connection_pool"):
            raise ValueError("min_replicas_to_ack needs a single primary (not ?cluster=true)")
        self.min_replicas_to_ack = min_replicas_to_ack
        self.ack_timeout_ms = ack_timeout_ms
        self.failover_wait_s = failover_wait_s
        self.redis = redis
        self.keys = Keys(namespace)
        self.retention = retention
        self.idempotency_ttl_s = idempotency_ttl_s
        self.audit_maxlen = audit_maxlen
        self.inline_max_bytes = inline_max_bytes
        self._publish = redis.register_script(lua.PUBLISH)
        self._fetch_head = redis.register_script(lua.FETCH_HEAD)
        self._import = redis.register_script(lua.IMPORT)
        self._replicas = redis.register_script(lua.REPLICAS)
        self._sync_read = redis.register_script(lua.SYNC_READ)
        self._fence = redis.register_script(durability.FENCE)
        self._ro_scripts = True
        self._status_conn = PinnedConnection(redis)
        self._mark_broken = False  # the reported-version mark's write failed (logged once)

    @property
    def namespace(self) -> str:
        return self.keys.namespace

    async def publish(
        self,
        body: bytes,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        author: str = "",
        message: str = "",
        kind: Kind = "publish",
        source: int | None = None,
        request_sha256: str | None = None,
        rollout: Rollout | None = None,
        traceparent: str | None = None,
        sig: str = "",
    ) -> PublishResult:
        """Publish a new version atomically (CAS on `expected_version`, when given).

        With `idempotency_key`, a retry returns the first call's result. What makes a retry
        "the same" is `request_sha256` (a digest of the caller's request) when given, else
        the body's sha256. With `rollout`, the version is written and the rollout starts in
        the same step, but head stays where it is. While a rollout runs, both are refused
        with RolloutRunning. `sig`: the admin's signature of the body (`configbus.signing`)."""
        if sig and not _HEX.fullmatch(sig):
            raise ValueError("sig must be a hex digest")
        k = self.keys
        sha = sha256_hex(body)
        idem_key = k.idem_prefix + (idempotency_key or "")
        args: list[Any] = [
            "" if expected_version is None else str(expected_version),
            body,
            sha,
            secrets.token_hex(8),
            author,
            message,
            kind,
            "" if source is None else str(source),
            self.retention,
            self.idempotency_ttl_s,
            self.audit_maxlen,
            k.changes,
            k.record_prefix,
            "1" if idempotency_key else "0",
            request_sha256 or "",
            *(rollout_args(rollout) if rollout else ("", "", "", "")),
            self.inline_max_bytes,
            traceparent if traceparent and parse_traceparent(traceparent) else "",
            sig,
        ]
        keys = [k.seq, k.head, k.epoch, k.history, k.audit, idem_key, k.rollout, k.rev,
                k.replicas, k.server, k.fence, k.reported]  # fmt: skip
        res, acked = await guarded(self._run_publish(keys, args), "publish")
        outcome, version, epoch, rsha = (text_of(x) for x in res)
        if outcome == "conflict":
            raise VersionConflict(expected_version or 0, int(version))
        if outcome == "rollout_running":
            raise RolloutRunning(epoch, int(version))
        if outcome == "idempotency_mismatch":
            raise IdempotencyMismatch(idempotency_key or "", int(version))
        if outcome == "damaged":
            raise DamagedNamespace(
                f"publish: {k.head} holds {rsha[:40]!r}, not a version number; publish without "
                "If-Match to replace it"
                if rsha != "no free version number"
                else f"publish: no free version number in {self.namespace!r}",
                epoch=epoch or None,
            )
        if outcome == "idempotent" and self.min_replicas_to_ack:
            acked = await guarded(self._wait_again(idem_key), "publish")
        if acked is not None and acked < self.min_replicas_to_ack:
            raise NotReplicated(int(version), acked, self.min_replicas_to_ack, self.ack_timeout_ms)
        return PublishResult(
            version=int(version),
            epoch=epoch,
            sha256=rsha,
            outcome=outcome,  # type: ignore[arg-type]
        )

    async def _run_publish(self, keys: list[str], args: list[Any]) -> tuple[Any, int | None]:
        k = self.keys
        return await durability.run_publish(
            self.redis,
            publish=self._publish,
            keys=keys,
            args=args,
            fence=self._fence,
            fence_keys=[k.epoch, k.replicas, k.server, k.fence],
            wait_s=self.failover_wait_s,
            min_replicas=self.min_replicas_to_ack,
            timeout_ms=self.ack_timeout_ms,
        )

    async def _wait_again(self, idem_key: str) -> int:
        return await durability.wait_again(
            self.redis,
            idem_key,
            self.idempotency_ttl_s,
            min_replicas=self.min_replicas_to_ack,
            timeout_ms=self.ack_timeout_ms,
        )

    async def rollback(
        self,
        to_version: int,
        *,
        expected_version: int | None = None,
        idempotency_key: str | None = None,
        author: str = "",
        message: str = "",
        sig: str | None = None,
    ) -> PublishResult:
        """Publish version `to_version`'s body again as a new, higher version (signed with
        `sig`, else with the old version's signature: the body is the same)."""
        record = await self.get(to_version)
        record.verify()
        return await self.publish(
            record.body,
            expected_version=expected_version,
            idempotency_key=idempotency_key,
            author=author,
            message=message or f"rollback to version {to_version}",
            kind="rollback",
            source=to_version,
            sig=sig if sig is not None else record.sig,
        )

    async def head(self) -> Head:
        """Head's version, epoch and sha256, read in one atomic step."""
        head, _ = await self._fetch(None, 0, "*", head_only=True)
        return head

    async def fetch_head(
        self, known_epoch: str | None = None, known_version: int = 0, known_sha256: str = "*"
    ) -> tuple[Head, VersionRecord | None]:
        """Head, and its record unless the caller already holds it (same epoch, version and
        sha256; `*` matches any sha) or holds something newer in the same epoch: one round
        trip, one atomic read, no body transferred when there is nothing new."""
        return await self._fetch(known_epoch, known_version, known_sha256, head_only=False)

    async def sync_read(
        self,
        *,
        held: tuple[str, int, str, bool] | None,
        rejected: tuple[int, str] | None,
        replica_id: str,
        labels: Mapping[str, str],
    ) -> SyncRead:
        """What a replica should run (the rollout's version when the running rollout selects
        it, else head) and, unless it already holds or rejected exactly that, its record:
        one round trip, one atomic read. `held` is (epoch, version, sha256, from a rollout)."""
        k = self.keys
        epoch, version, sha, staged = held or ("", 0, "", False)
        args: list[Any] = [
            k.record_prefix, epoch, version, sha, "1" if staged else "0",
            f"{rejected[0]}:{rejected[1]}" if rejected else "", replica_id,
            *(f"{name}={value}" for name, value in labels.items()),
        ]  # fmt: skip
        res = await guarded(
            self._read_only(self._sync_read, [k.head, k.epoch, k.rollout, k.rev], args),
            "sync read",
        )
        epoch_now = text_of(res[1]) or None
        if (res[0] and stored_version(res[0]) is None) or (
            res[2] and stored_version(res[2]) is None
        ):
            raise DamagedNamespace(
                f"{k.head} holds {text_of(res[0])[:40]!r}, not a version number", epoch=epoch_now
            )
        head = int(res[0]) if res[0] else 0
        target = int(res[2]) if res[2] else 0
        read = SyncRead(
            head=head,
            epoch=epoch_now,
            target=target,
            sha256=text_of(res[3]) or None,
            staged=res[4] == 1,
            rollout_running=res[5] == 1,
            rev=int(res[6]),
        )
        if head and not res[3]:
            raise CorruptRecord(
                f"{k.record(target)}: head points at a missing record",
                epoch=epoch_now,
                version=target,
            )
        if len(res) == 7:
            return read
        fields = dict(zip(res[7::2], res[8::2], strict=True))
        try:
            record = parse_record(fields, k.record(target))
        except CorruptRecord as exc:
            raise CorruptRecord(str(exc), epoch=epoch_now, version=target) from None
        return msgspec.structs.replace(read, record=record)

    async def _read_only(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """A script that only reads, as EVALSHA_RO: an ACL user with read-only access to the
        keys may run it (docs/acl.md). Plain EVALSHA where that is missing (a cluster
        client, an embedded fake Redis)."""
        if not self._ro_scripts or not hasattr(self.redis, "connection_pool"):
            return await script(keys=keys, args=args)
        try:
            try:
                return await self.redis.evalsha_ro(script.sha, len(keys), *keys, *args)
            except NoScriptError:
                await self.redis.script_load(script.script)
                return await self.redis.evalsha_ro(script.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            self._ro_scripts = False
            return await script(keys=keys, args=args)

    async def _fetch(
        self, known_epoch: str | None, known_version: int, known_sha256: str, *, head_only: bool
    ) -> tuple[Head, VersionRecord | None]:
        k = self.keys
        args: list[Any] = [k.record_prefix, known_epoch or "", known_version, known_sha256,
                "1" if head_only else "0"]  # fmt: skip
        res = await guarded(
            self._read_only(self._fetch_head, [k.head, k.epoch], args), "fetch head"
        )
        epoch, sha = text_of(res[1]) or None, text_of(res[2]) or None
        if res[0] and (stored_version(res[0]) is None or (len(res) == 4 and res[3] == b"damaged")):
            damage = f"{k.head} holds {text_of(res[0])[:40]!r}, not a version number"
            if head_only:
                return Head(0, epoch, None, damage=damage), None
            raise DamagedNamespace(damage + _REPAIR, epoch=epoch)
        head = Head(int(res[0]) if res[0] else 0, epoch, sha)
        if len(res) == 3:
            return head, None
        if len(res) == 4:
            damage = f"{k.head} is {head.version}: head points at a missing record {k.record(head.version)}"
            if head_only:
                return msgspec.structs.replace(head, damage=damage), None
            raise DamagedNamespace(damage + _REPAIR, epoch=head.epoch, version=head.version)
        fields = dict(zip(res[3::2], res[4::2], strict=True))
        try:
            return head, parse_record(fields, k.record(head.version))
        except CorruptRecord as exc:
            raise CorruptRecord(str(exc), epoch=head.epoch, version=head.version) from None

    async def get(self, version: int) -> VersionRecord:
        key = self.keys.record(version)
        fields = await guarded(self.redis.hgetall(key), f"read version {version}")
        if not fields:
            raise VersionNotFound(version)
        return parse_record(fields, key)

    async def versions(self, *, limit: int = 50, before: int | None = None) -> list[RecordMeta]:
        """Version metadata, newest first; `before` pages to older versions."""
        hi = "+inf" if before is None else f"({before}"
        nums = await guarded(
            self.redis.zrevrangebyscore(self.keys.history, hi, "-inf", start=0, num=limit),
            "list versions",
        )
        if not nums:
            return []
        names = [f for f in RecordMeta.__struct_fields__]
        pipe = self.redis.pipeline(transaction=False)
        for n in nums:
            pipe.hmget(self.keys.record(int(n)), names)
        rows = await guarded(pipe.execute(), "list versions")
        out = []
        for n, row in zip(nums, rows, strict=True):
            if row[0] is None:
                continue  # trimmed between the two reads
            fields = dict(zip([x.encode() for x in names], row, strict=True))
            fields[b"body"] = b""
            out.append(parse_record(fields, self.keys.record(int(n))).meta)
        return out

    async def audit(self, action: str, actor: str, outcome: str, **fields: Any) -> str:
        """Append one entry to the audit stream. Callers pass no secrets."""
        entry: dict[Any, Any] = {
            "ts": f"{time.time():.6f}",
            "action": action,
            "actor": actor,
            "outcome": outcome,
        }
        entry.update({k: "" if v is None else str(v) for k, v in fields.items()})
        res = await guarded(
            self.redis.xadd(self.keys.audit, entry, maxlen=self.audit_maxlen, approximate=True),
            "audit",
        )
        return text_of(res)

    async def audit_entries(
        self, *, count: int = 100, before: str | None = None
    ) -> list[AuditEntry]:
        """Audit entries, newest first; `before` is an entry id to page from."""
        entries, _ = await scan_audit(self.redis, self.keys.audit, count=count, before=before)
        return entries

    async def report(self, status: ReplicaStatus) -> None:
        """Record a replica's status stamped with the server's clock now (two round trips:
        for tools and tests; a replica's reporter follows the clock and uses `report_at`)."""
        await self.report_at(status, await self.server_time())

    async def report_at(self, status: ReplicaStatus, last_seen: float) -> None:
        """Record a replica's status stamped `last_seen` (the server's clock, as the caller
        follows it from `server_time`): a plain HSET, the cheapest write there is, and
        before it, in the same write, the version it runs into its lineage's highest
        reported (`Keys.reported`, which new versions are numbered above), on a connection
        of its own (`configbus.pinned`)."""
        value = _status_encoder.encode(status)
        stamp = b'{"last_seen":%.6f,' % last_seen
        write = ("HSET", self.keys.replicas, status.replica_id, stamp + value[1:])
        # The high-water mark first: once the status is readable, the version counts.
        mark = ("ZADD", self.keys.reported, "GT", status.version, status.epoch)
        commands = [mark, write] if status.epoch and status.version > 0 else [write]
        replies = await guarded(self._status_conn.call_many(commands), "report status")
        if isinstance(replies[-1], ResponseError):
            raise store_error(replies[-1], "report status")
        broken = len(replies) > 1 and isinstance(replies[0], ResponseError)
        if broken and not self._mark_broken:
            # Publishes read every status instead (durability.REPORTED_TOP): correct, slower.
            log.warning(
                "report status: %s is unwritable (%s); publishes number versions from the "
                "statuses instead, slower, until it is writable (a damaged key: delete it, "
                "reports rebuild it; an ACL without it: docs/acl.md)",
                self.keys.reported,
                replies[0],
            )
        self._mark_broken = broken

    async def server_time(self) -> float:
        """The Redis server's clock, in seconds."""
        sec, usec = await guarded(self.redis.time(), "read server time")
        return int(sec) + int(usec) / 1e6

    async def replicas(self, *, forget_after_s: float = 24 * 3600) -> list[ReplicaInfo]:
        """Every replica that reported recently; long-dead or unreadable ones are forgotten."""
        res = await guarded(self._replicas(keys=[self.keys.replicas]), "list replicas")
        out, forget = replica_infos(res, forget_after_s)
        if forget:
            await guarded(self.redis.hdel(self.keys.replicas, *forget), "forget replicas")
        return out

    async def export(self) -> Export:
        """Every retained version, for backup or re-seeding an empty store."""
        return await backup.export(self)

    async def import_(self, data: Export, *, actor: str = "") -> int:
        """Re-seed an empty namespace from an export (see `configbus.backup`)."""
        return await backup.import_(self, data, actor=actor)
