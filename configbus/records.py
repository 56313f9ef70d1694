"""What the store holds, as types: the Redis layout of a namespace and the records in it.

    cb:{ns}:seq        version counter            cb:{ns}:v:<n>     immutable version record
    cb:{ns}:head       current version            cb:{ns}:history   version index (ZSET)
    cb:{ns}:epoch      lineage id                 cb:{ns}:audit     audit stream
    cb:{ns}:replicas   replica status (HASH)      cb:{ns}:idem:<k>  idempotency results
    cb:{ns}:rev        changes so far (publishes and rollout steps)
    cb:{ns}:server     run_id of the server last published on   cb:{ns}:fence   replicas to
                       hear from on a new one (see configbus.durability)
    cb:{ns}:reported   per lineage (epoch), the highest version a replica reported (ZSET)
    channel cb:{ns}:changes   {version, sha256, epoch, rev}: a hint, the store is the truth;
                              a small plain publish's hint carries its whole record

One hash tag per namespace, so Redis Cluster keeps a namespace on one slot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from configbus.codec import sha256_hex
from configbus.errors import CorruptRecord
from configbus.names import check_namespace
from configbus.rollout import Traffic

DEFAULT_REPLICA_TTL_S = 15.0

Kind = Literal["publish", "patch", "rollback", "rotate", "import", "rollout"]


class Keys:
    """Every key and channel name of one namespace."""

    def __init__(self, namespace: str) -> None:
        check_namespace(namespace)
        p = f"cb:{{{namespace}}}:"
        self.namespace = namespace
        self.seq, self.head, self.epoch = p + "seq", p + "head", p + "epoch"
        self.history, self.audit, self.replicas = p + "history", p + "audit", p + "replicas"
        self.record_prefix, self.idem_prefix = p + "v:", p + "idem:"
        self.changes = p + "changes"
        self.rollout, self.rollout_lease = p + "rollout", p + "rollout:lease"
        self.rollout_baseline = p + "rollout:baseline"
        self.rev = p + "rev"  # counts publishes and rollout steps: how far a reader is
        # The server last published on, and the replicas to hear from after a failover.
        self.server, self.fence = p + "server", p + "fence"
        # Per epoch, the highest version any replica reported running (ZADD GT): new
        # versions are numbered above it (configbus.durability).
        self.reported = p + "reported"

    def record(self, version: int) -> str:
        return f"{self.record_prefix}{version}"


class RecordMeta(msgspec.Struct, frozen=True, kw_only=True):
    """A version record without its body."""

    version: int
    parent: int
    epoch: str
    sha256: str
    author: str
    message: str
    created_at: float
    kind: str
    source: int | None = None


class VersionRecord(RecordMeta, frozen=True, kw_only=True):
    """An immutable version record: metadata and the canonical body."""

    body: bytes
    sig: str = ""  # the admin's signature of the body (`configbus.signing`); "" = none

    @property
    def meta(self) -> RecordMeta:
        fields = {f: getattr(self, f) for f in RecordMeta.__struct_fields__}
        return RecordMeta(**fields)

    def verify(self) -> None:
        """Raise CorruptRecord unless the body matches its sha256."""
        actual = sha256_hex(self.body)
        if actual != self.sha256:
            raise CorruptRecord(
                f"version {self.version}: checksum mismatch (record says {self.sha256[:12]}…, "
                f"body hashes to {actual[:12]}…)"
            )


class Head(msgspec.Struct, frozen=True):
    version: int  # 0: nothing published in this lineage (or a head that is no number)
    epoch: str | None
    sha256: str | None = None
    damage: str | None = None  # what is wrong with head, when something is


MAX_STORED_VERSION = 2**53  # the largest integer a JSON number (and a Lua number) holds exactly


def stored_version(raw: bytes | str | None) -> int | None:
    """A version number as stored (digits, 1 to 2**53), or None for anything else."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else (raw or "")
    if not (text.isascii() and text.isdigit()) or len(text) > 16:
        return None
    n = int(text)
    return n if 1 <= n <= MAX_STORED_VERSION else None


class SyncRead(msgspec.Struct, frozen=True, kw_only=True):
    """One replica's read of what it should run: head, the target (head, or the running
    rollout's version when it selects the replica) and the target's record when new."""

    head: int  # 0: nothing published in this lineage
    epoch: str | None
    target: int
    sha256: str | None  # the target's
    staged: bool  # the target is a rollout's version, not head
    rollout_running: bool
    rev: int = 0  # the namespace's change count this read saw (a lagging replica's is lower)
    record: VersionRecord | None = None


class PublishResult(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    epoch: str
    sha256: str
    # created: a new version; noop: body equal to head; idempotent: a retry of an earlier call
    outcome: Literal["created", "noop", "idempotent"]

    @property
    def created(self) -> bool:
        return self.outcome == "created"


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    ts: float
    action: str
    actor: str
    outcome: str
    fields: dict[str, str] = {}


def audit_entry(entry_id: bytes | str, raw: Mapping[Any, Any]) -> AuditEntry:
    """One audit stream entry as read from Redis."""
    f = {_lenient(k): _lenient(v) for k, v in raw.items()}
    try:
        ts = float(f.pop("ts", "0") or 0)
    except ValueError:
        ts = 0.0
    return AuditEntry(
        id=_lenient(entry_id),
        ts=ts,
        action=f.pop("action", ""),
        actor=f.pop("actor", ""),
        outcome=f.pop("outcome", ""),
        fields=f,
    )


class ReplicaStatus(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a replica reports about itself."""

    # The publish script reads `version` and `epoch` by position (configbus.durability
    # REPORTED_TOP): keep them third and fourth, after two string fields.
    replica_id: str
    state: Literal["applied", "rejected", "pending"]
    version: int = 0
    epoch: str | None = None
    sha256: str | None = None
    applied_at: float | None = None
    stale: bool = False
    rejected_version: int | None = None
    reason: str | None = None
    ttl_s: float = DEFAULT_REPLICA_TTL_S
    labels: dict[str, str] = {}
    staged: bool = False  # runs a rollout's version, not head
    # Requests served per version (the version as text), cumulative: what a rollout's
    # guard judges a stage by.
    traffic: dict[str, Traffic] = {}
    # Seconds from the held version's publish (its created_at) to this replica's swap.
    propagation_s: float | None = None
    # The client key collection this replica holds: its lineage and revision (0: none).
    keys_epoch: str | None = None
    keys_rev: int = 0


class ReplicaInfo(msgspec.Struct, frozen=True, kw_only=True):
    status: ReplicaStatus
    last_seen: float
    alive: bool


class StoredStatus(ReplicaStatus, frozen=True, kw_only=True):
    last_seen: float = 0.0


_record_fields = frozenset(VersionRecord.__struct_fields__)


def _lenient(value: bytes | str) -> str:
    # An audit entry is shown, never trusted: bytes that are not UTF-8 must not stop a read.
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def text_of(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def parse_record(fields: Mapping[Any, Any], where: str) -> VersionRecord:
    """Build a record from a Redis hash; anything malformed is a CorruptRecord naming the key."""
    try:
        f = {text_of(k): v for k, v in fields.items()}
        missing = sorted(_record_fields - f.keys() - {"source", "sig"})
        if missing:
            raise CorruptRecord(f"{where}: missing fields {', '.join(missing)}")
        source = text_of(f.get("source"))
        return VersionRecord(
            version=int(f["version"]),
            parent=int(f["parent"]),
            epoch=text_of(f["epoch"]),
            sha256=text_of(f["sha256"]),
            author=text_of(f["author"]),
            message=text_of(f["message"]),
            created_at=float(f["created_at"]),
            kind=text_of(f["kind"]),
            source=int(source) if source else None,
            body=f["body"],
            sig=text_of(f.get("sig")),
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(f"{where}: unreadable record ({exc})") from None


class Export(msgspec.Struct, frozen=True, kw_only=True):
    namespace: str
    epoch: str | None
    head: int
    records: list[VersionRecord]


_stored_status_decoder = msgspec.json.Decoder(StoredStatus)


def replica_infos(reply: Any, forget_after_s: float) -> tuple[list[ReplicaInfo], list[Any]]:
    """The REPLICAS script's reply (server time, then id/status pairs) as replicas sorted by
    id, and the ids to forget: unreadable, or silent for longer than `forget_after_s`."""
    now = int(reply[0]) + int(reply[1]) / 1e6
    out, forget = [], []
    for rid, value in zip(reply[2::2], reply[3::2], strict=True):
        try:
            st = _stored_status_decoder.decode(value)
        except msgspec.DecodeError:
            forget.append(rid)
            continue
        age = now - st.last_seen
        if age > forget_after_s:
            forget.append(rid)
            continue
        fields = {f: getattr(st, f) for f in ReplicaStatus.__struct_fields__}
        out.append(
            ReplicaInfo(
                status=ReplicaStatus(**fields), last_seen=st.last_seen, alive=age <= st.ttl_s
            )
        )
    out.sort(key=lambda r: r.status.replica_id)
    return out, forget
