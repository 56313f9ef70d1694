"""The admin HTTP contract, declared once.

Every request and response body of the admin service is a struct here, with the formats
of its path parameters, query strings and headers. The service decodes requests and
encodes answers with them, `admin/openapi.py` generates the OpenAPI document from them,
and the admin client decodes answers into them: a field cannot exist in one and not the
others.

Requests forbid unknown fields (a typo is an error, never silently ignored); responses do
not, so a client keeps working against a newer service that adds a field.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from configbus.clientkeys import KEY_ID_PATTERN, ClientKey, MetaValue
from configbus.document import NAME_PATTERN, SHA256_PATTERN, Budget, RateLimit
from configbus.errors import Issue
from configbus.names import DEFAULT_NAMESPACE, NAMESPACE_PATTERN, NAMESPACE_RULE
from configbus.rollout import Assessment, Guard, Rollout
from configbus.store import AuditEntry, RecordMeta

# Where the generated OpenAPI document keeps its schemas; a `$ref` below points there.
SCHEMA_REF = "#/components/schemas/{name}"

MAX_VERSION = 2**53  # the largest integer a JSON number holds exactly
MAX_VERSION_DIGITS = len(str(MAX_VERSION))
MESSAGE_MAX = 1000
VERSIONS_PAGE_MAX, VERSIONS_PAGE_DEFAULT = 500, 50
AUDIT_PAGE_MAX, AUDIT_PAGE_DEFAULT = 1000, 100
AUDIT_FILTER_MAX = 200

# `*` (any version), or a version number, quoted or not, optionally weak (W/"7").
IF_MATCH_PATTERN = rf'^(?:\*|(?:W/)?"?([0-9]{{1,{MAX_VERSION_DIGITS}}})"?)$'
IDEMPOTENCY_KEY_MAX = 200
# Printable ASCII, as the Idempotency-Key draft's structured-header string allows.
IDEMPOTENCY_KEY_PATTERN = rf"^[\x20-\x7e]{{1,{IDEMPOTENCY_KEY_MAX}}}$"
IDEMPOTENCY_KEY_RULE = f"1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters"
# A Redis stream id: milliseconds, optionally `-sequence` (each fits a 64-bit integer).
AUDIT_ID_PATTERN = r"^[0-9]{1,19}(?:-[0-9]{1,19})?$"

Namespace = Annotated[
    str, Meta(pattern=NAMESPACE_PATTERN, description=NAMESPACE_RULE, examples=[DEFAULT_NAMESPACE])
]
Version = Annotated[int, Meta(ge=1, le=MAX_VERSION, examples=[1])]
Message = Annotated[str, Meta(max_length=MESSAGE_MAX, description="why (kept in history)")]
IfMatch = Annotated[
    str,
    Meta(pattern=IF_MATCH_PATTERN, description="publish only if this is the current version"),
]
IdempotencyKey = Annotated[
    str,
    Meta(
        pattern=IDEMPOTENCY_KEY_PATTERN,
        description="a retry with the same key returns the first result",
    ),
]
# A string parameter's `title` says what it must be, in the 400 answer to a bad one.
AuditId = Annotated[str, Meta(pattern=AUDIT_ID_PATTERN, title="an audit entry id like 1700-0")]
AuditFilter = Annotated[
    str, Meta(max_length=AUDIT_FILTER_MAX, title=f"at most {AUDIT_FILTER_MAX} characters")
]
ETag = Annotated[str, Meta(pattern=r'^"[0-9]+"$', description="the version, quoted")]
RetryAfter = Annotated[str, Meta(pattern=r"^[0-9]+$", description="seconds to wait")]

# A document travels as plain JSON: the service checks it itself, so a bad one is answered
# with every issue and its path (decoding straight into `Document` stops at the first), and
# a masked one shown to a client is printed as it came. Its schema is the real `Document`.
DocumentJSON = Annotated[
    dict[str, Any],
    Meta(
        extra_json_schema={"$ref": SCHEMA_REF.format(name="Document")},
        description="a config document (see Document)",
    ),
]


class _Request(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Base of request bodies: strict, immutable, keyword-only."""


class _Response(msgspec.Struct, frozen=True, kw_only=True):
    """Base of response bodies: immutable, keyword-only, tolerant of fields added later."""


class PublishRequest(_Request, frozen=True, kw_only=True):
    """A full document to publish (PUT config) or to check (POST validate)."""

    document: DocumentJSON
    message: Message = ""


class RollbackRequest(_Request, frozen=True, kw_only=True):
    """Publish the body of `to_version` again, as a new version."""

    to_version: Version
    message: Message = ""


class RotateRequest(_Request, frozen=True, kw_only=True):
    """Re-encrypt every secret with the newest key, as a new version."""

    message: Message = ""


# A JSON merge patch (RFC 7396) of the current, masked document; a patch object naming a
# secret form replaces that secret whole.
MergePatch = Annotated[
    dict[str, Any], Meta(description="a JSON merge patch (RFC 7396) of the current document")
]


class ErrorBody(_Response, frozen=True, kw_only=True):
    """What went wrong: a stable code, a message, and every issue with its path."""

    code: str
    message: str
    issues: list[Issue]
    # Set on a version conflict and on an import into a namespace that has versions; on
    # `not_replicated`, the version that was published but not acknowledged by enough replicas.
    current_version: int | UnsetType = UNSET
    # On `not_replicated`: how many Redis replicas acknowledged the publish in time.
    replicas_acked: int | UnsetType = UNSET
    # On a client key's `revision_conflict`: the key's revision now.
    current_revision: int | UnsetType = UNSET


class ErrorEnvelope(_Response, frozen=True, kw_only=True):
    """Every error answer of the admin service."""

    error: ErrorBody


class Status(_Response, frozen=True, kw_only=True):
    status: str


class VersionView(RecordMeta, frozen=True, kw_only=True):
    """One version with its document, secrets masked."""

    namespace: str
    document: DocumentJSON


class VersionPage(_Response, frozen=True, kw_only=True):
    """Versions newest first; `next_before` asks for the next page, null on the last."""

    versions: list[RecordMeta]
    next_before: int | None


class ValidateResult(_Response, frozen=True, kw_only=True):
    """A valid document and the paths of its secrets."""

    valid: bool
    issues: list[Issue]
    secrets: list[str]


class ChangedPath(msgspec.Struct, frozen=True):
    """A leaf-most path where two documents differ."""

    path: str
    change: Literal["added", "removed", "changed"]


class Diff(_Response, frozen=True, kw_only=True):
    from_: int = msgspec.field(name="from")
    to: int
    unified: str
    changes: list[ChangedPath]


class ReplicaRow(_Response, frozen=True, kw_only=True):
    """What one replica last reported, and whether it is alive and on head."""

    replica_id: str
    state: Literal["applied", "rejected", "pending"]
    version: int
    epoch: str | None
    sha256: str | None
    applied_at: float | None
    stale: bool
    rejected_version: int | None
    reason: str | None
    last_seen: float
    alive: bool
    on_head: bool
    labels: dict[str, str] = {}  # what rollout stages select it by
    propagation_s: float | None = None  # its version's publish → its swap
    staged: bool = False  # runs a rollout's version, not head
    # The client key collection it holds: the revision (its ACK of key changes) and lineage.
    keys_rev: int = 0
    keys_epoch: str | None = None


class ReplicaSummary(_Response, frozen=True, kw_only=True):
    """The rollout at a glance; `per_version` counts live replicas by version."""

    head: int
    epoch: str | None
    total: int
    alive: int
    dead: int
    rejected: int
    per_version: dict[str, int]
    all_on_head: bool
    # What is wrong with the namespace's head, when something is (a publish repairs it).
    damage: str | None = None
    # The live replica on head that swapped to it last, and how long after the publish.
    slowest_replica: str | None = None
    slowest_propagation_s: float | None = None


class Replicas(_Response, frozen=True, kw_only=True):
    summary: ReplicaSummary
    replicas: list[ReplicaRow]


class AuditPage(_Response, frozen=True, kw_only=True):
    """Audit entries newest first; `next_before` asks for the next page, null on the last."""

    entries: list[AuditEntry]
    next_before: str | None


class ImportResult(_Response, frozen=True, kw_only=True):
    head: int
    versions: int


class ValidateQuery(_Request, frozen=True, kw_only=True):
    probe: Annotated[
        bool,
        Meta(
            description="also ask every provider the document changes (against head) for "
            "its model list with its key; 422 when one fails"
        ),
    ] = False


# A provider's name in a path (a name holding `/` cannot be addressed in a path).
ProviderName = Annotated[
    str, Meta(min_length=1, max_length=128, pattern=r"^[^/]+$", examples=["upstream-a"])
]


class ProviderTest(_Response, frozen=True, kw_only=True):
    """What a provider answered when asked for its model list with the stored key."""

    provider: str
    url: str
    ok: bool
    status: int | None  # the provider's HTTP status; null when no answer came
    latency_ms: float
    # Which key was sent: the document's `secret`, none for `env` (only replicas hold the
    # variable), or `none` configured.
    key: Literal["secret", "env", "none"]
    error: str | None = None  # the provider's answer (cut short, key blotted out) or why none


class ProviderModels(_Response, frozen=True, kw_only=True):
    """The models a provider lists, as it answered with the stored key."""

    provider: str
    models: list[str]
    latency_ms: float


class VersionsQuery(_Request, frozen=True, kw_only=True):
    limit: Annotated[int, Meta(ge=1, le=VERSIONS_PAGE_MAX, description="page size")] = (
        VERSIONS_PAGE_DEFAULT
    )
    before: Annotated[Version, Meta(description="only versions older than this")] | None = None


class DiffQuery(_Request, frozen=True, kw_only=True):
    from_: Annotated[Version, Meta(description="the older version")] = msgspec.field(name="from")
    to: Annotated[Version, Meta(description="the newer version", examples=[2])]


class AuditQuery(_Request, frozen=True, kw_only=True):
    count: Annotated[int, Meta(ge=1, le=AUDIT_PAGE_MAX, description="page size")] = (
        AUDIT_PAGE_DEFAULT
    )
    before: Annotated[AuditId, Meta(description="only entries older than this id")] | None = None
    actor: Annotated[AuditFilter, Meta(description="only entries of this token name")] | None = None
    action: (
        Annotated[AuditFilter, Meta(description="only this action (publish, get...)")] | None
    ) = None
    outcome: (
        Annotated[AuditFilter, Meta(description="only this outcome (created, unauthorized...)")]
        | None
    ) = None


class PatchQuery(_Request, frozen=True, kw_only=True):
    message: Annotated[
        str, Meta(description=f"the version's message (cut at {MESSAGE_MAX} characters)")
    ] = ""


MAX_STAGES = 10
# `10%` (a share of live replicas) or `tier=canary,zone=eu` (labels a replica carries).
SELECTOR_PATTERN = r"^(?:[0-9]{1,3}(?:\.[0-9]+)?%|[^=,\s]+=[^=,\s]+(?:,[^=,\s]+=[^=,\s]+)*)$"


class StageRequest(_Request, frozen=True, kw_only=True):
    """One stage: who runs the new version, and how long it bakes before the next."""

    selector: Annotated[
        str,
        Meta(
            pattern=SELECTOR_PATTERN,
            description="`10%` (a share of live replicas, stable per replica) or "
            "`tier=canary` (replicas carrying these labels)",
            examples=["tier=canary", "10%"],
        ),
    ]
    bake_s: Annotated[float, Meta(ge=0, le=7 * 86400, description="seconds")] = 60.0


class RolloutRequest(_Request, frozen=True, kw_only=True):
    """A new version for stages of replicas first: a full document or a merge patch of
    head (exactly one), the stages in order, and the guard that judges each."""

    document: DocumentJSON | None = None
    patch: MergePatch | None = None
    message: Message = ""
    stages: Annotated[list[StageRequest], Meta(min_length=1, max_length=MAX_STAGES)]
    guard: Guard = Guard()
    # Before stage 1, ask each provider whose settings changed for its model list with the
    # stored key; refuse the rollout with the provider's answer when that fails.
    preflight: bool = False


class RolloutAction(_Request, frozen=True, kw_only=True):
    """Promote or abort a running rollout by hand; the message goes to the audit."""

    message: Message = ""


class RolloutView(_Response, frozen=True, kw_only=True):
    """The namespace's rollout (running, or the last one ended) and, while it runs, the
    guard's view of the current stage."""

    rollout: Rollout
    assessment: Assessment | None = None


# -- client keys (a keyed collection beside the document) --------------------------------

KEYS_PAGE_MAX, KEYS_PAGE_DEFAULT = 1000, 100
MAX_GRACE_S = 90 * 86400
KeyId = Annotated[
    str,
    Meta(
        pattern=KEY_ID_PATTERN,
        title="a key id: 'key_' then 1-64 letters, digits, '_' or '-'",
        examples=["key_0123456789abcdef"],
    ),
]
KeyName = Annotated[str, Meta(min_length=1, max_length=128, pattern=NAME_PATTERN)]
KeySha256 = Annotated[
    str, Meta(pattern=SHA256_PATTERN, description="sha256 of the key, 64 lowercase hex digits")
]
KeyModel = Annotated[str, Meta(min_length=1, max_length=256, description="a model name, or *")]
KeyModels = Annotated[list[KeyModel], Meta(min_length=1, max_length=256)]
KeyTags = Annotated[list[Annotated[str, Meta(min_length=1, max_length=64)]], Meta(max_length=32)]
KeyMetadata = Annotated[
    dict[Annotated[str, Meta(min_length=1, max_length=64)], MetaValue], Meta(max_length=32)
]
ExpiresAt = Annotated[float, Meta(ge=0, description="unix seconds; the key answers 401 from then")]
KeyETag = Annotated[str, Meta(pattern=r'^"[0-9]+"$', description="the key's revision, quoted")]
KeyIfMatch = Annotated[
    str,
    Meta(pattern=IF_MATCH_PATTERN, description="change the key only if this is its revision"),
]
# A page cursor as the service gave it: opaque digits.
KeyCursor = Annotated[
    str, Meta(pattern=r"^[0-9]{1,20}(?:-[0-9]{1,10})?$", title="a cursor the last page gave")
]


class KeyCreateRequest(_Request, frozen=True, kw_only=True):
    """A new client key. Without `key_sha256` the service generates the key and answers it
    once (only its hash is stored); with it, the key stays yours. A hash that a client of
    head's document or another key already has is refused (409)."""

    name: KeyName
    key_sha256: KeySha256 | None = None
    id: KeyId | None = None  # chosen by the service when absent; a taken one is a 409
    models: KeyModels = msgspec.field(default_factory=lambda: ["*"])
    rate_limit: RateLimit | None = None
    budget: Budget | None = None
    team: KeyName | None = None
    tags: KeyTags = []
    metadata: KeyMetadata = {}
    enabled: bool = True
    expires_at: ExpiresAt | None = None
    # Take over a client of head's document (`configbus keys import`, which then publishes
    # the document without it): its hash may be in the document's `clients` meanwhile.
    adopt: bool = False


class KeyUpdateRequest(_Request, frozen=True, kw_only=True):
    """Fields to change; an absent field keeps its value, `null` clears an optional one."""

    name: KeyName | UnsetType = UNSET
    models: KeyModels | UnsetType = UNSET
    rate_limit: RateLimit | UnsetType | None = UNSET
    budget: Budget | UnsetType | None = UNSET
    team: KeyName | UnsetType | None = UNSET
    tags: KeyTags | UnsetType = UNSET
    metadata: KeyMetadata | UnsetType = UNSET
    enabled: bool | UnsetType = UNSET
    expires_at: ExpiresAt | UnsetType | None = UNSET


class KeyRotateRequest(_Request, frozen=True, kw_only=True):
    """A new key for the entry; the old one keeps working for `grace_s` seconds."""

    grace_s: Annotated[
        float, Meta(ge=0, le=MAX_GRACE_S, description="seconds the old key keeps working")
    ] = 0.0


class KeysQuery(_Request, frozen=True, kw_only=True):
    cursor: Annotated[KeyCursor, Meta(description="where the last page ended")] | None = None
    count: Annotated[int, Meta(ge=1, le=KEYS_PAGE_MAX, description="page size (about)")] = (
        KEYS_PAGE_DEFAULT
    )
    team: (
        Annotated[KeyName, Meta(title="a team name", description="only keys of this team")] | None
    ) = None
    tag: (
        Annotated[
            str,
            Meta(
                min_length=1,
                max_length=64,
                title="1 to 64 characters",
                description="only keys with this tag",
            ),
        ]
        | None
    ) = None


class KeyIssued(_Response, frozen=True, kw_only=True):
    """A key created or rotated: `key` is the key itself, shown this once (null when you
    brought its hash), and the entry as stored."""

    key: str | None
    entry: ClientKey


class KeyPage(_Response, frozen=True, kw_only=True):
    """Keys by id (within a page); `next_cursor` asks for the next page, null on the last. A
    filtered page may hold fewer keys than asked while more follow."""

    keys: list[ClientKey]
    next_cursor: str | None


class KeyRevoked(_Response, frozen=True, kw_only=True):
    """A revoked key: gone from the collection as of `revision`."""

    id: str
    revision: int


def non_null(tp: Any) -> Any:
    """`T` for `T | None`, else `tp`: a query parameter is absent rather than null."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


# -- usage (`GET .../usage`) --------------------------------------------------------------

USAGE_DIMENSIONS = ("key", "model", "provider", "team")
GROUP_BY_PATTERN = r"^(?:key|model|provider|team)(?:,(?:key|model|provider|team))*$"
UNIX_MAX = 2**40  # far past any date a usage bucket will carry
UsageFilter = Annotated[
    str, Meta(min_length=1, max_length=128, title="a name of at most 128 characters")
]
UnixSeconds = Annotated[int, Meta(ge=0, le=UNIX_MAX, examples=[1764547200])]
UsageBucket = Literal["minute", "hour", "day"]
USAGE_BUCKETS: tuple[UsageBucket, ...] = ("minute", "hour", "day")
MAX_USAGE_BUCKETS = 2000  # time buckets in one answer (a day and a half of minutes)


class UsageQuery(_Request, frozen=True, kw_only=True):
    """Usage summed over a time range (whole UTC minutes), filtered, and grouped."""

    from_: (
        Annotated[UnixSeconds, Meta(description="start, unix seconds (default: `to` - 1 day)")]
        | None
    ) = msgspec.field(default=None, name="from")
    to: Annotated[UnixSeconds, Meta(description="end, unix seconds (default: now)")] | None = None
    key: Annotated[UsageFilter, Meta(description="only this key (its id; a document "
                                     "client: its name)")] | None = None  # fmt: skip
    model: Annotated[UsageFilter, Meta(description="only this public model")] | None = None
    provider: Annotated[UsageFilter, Meta(description="only this provider")] | None = None
    team: Annotated[UsageFilter, Meta(description="only this team")] | None = None
    group_by: (
        Annotated[
            str,
            Meta(
                pattern=GROUP_BY_PATTERN,
                title="a comma-separated list of key, model, provider, team",
                description="one row per distinct value of these (comma-separated: key, "
                "model, provider, team); absent: the total only",
                examples=["key,model"],
            ),
        ]
        | None
    ) = None
    bucket: (
        Annotated[
            UsageBucket,
            Meta(
                title="one of minute, hour, day",
                description="one row per UTC minute, hour or day (and per group), its start "
                "in `t`; the range widens to whole buckets; buckets without usage are left "
                "out; at most "
                f"{MAX_USAGE_BUCKETS} buckets. minute and hour sum the minute counts (kept 8 "
                "days), day the day counts (kept 400 days)",
            ),
        ]
        | None
    ) = None


class UsageRow(_Response, frozen=True, kw_only=True):
    """Counts of one group (a dimension not grouped by is null). Cost is in integer
    micro-dollars (exact) and, rounded, in dollars."""

    t: (
        Annotated[int, Meta(description="the start of the row's time bucket, unix seconds "
                            "(when the query asks for `bucket`)")] | None
    ) = None  # fmt: skip
    key: str | None = None
    model: str | None = None
    provider: str | None = None
    team: str | None = None
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_micro_usd: int = 0
    cost_usd: float = 0.0


class UsageReport(_Response, frozen=True, kw_only=True):
    """Usage of a namespace over [from, to), as the replicas flushed it (≤ 1 s behind)."""

    namespace: str
    from_: int = msgspec.field(name="from")
    to: int
    group_by: list[str]
    rows: list[UsageRow]
    total: UsageRow
    bucket: UsageBucket | None = None
