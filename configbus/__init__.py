"""configbus: versioned config documents in Redis, published atomically, applied live.

The public surface: what the admin service, the replicas and your own code may use. The
contract of the admin API (`configbus.api`), the rollout rules (`configbus.rollout`), the
settings registry (`configbus.variables`) and usage, cost and spend in Redis
(`configbus.usage`) are exported as modules.
"""

from configbus import api, clientkeys, keystore, rollout, usage, variables
from configbus.auditlog import scan_audit
from configbus.breaker import (
    Breaker,
    BreakerState,
)
from configbus.clientkeys import ClientKey
from configbus.codec import (
    MAX_DEPTH,
    canonical,
    decode_body,
    load_file,
    parse,
    sha256_hex,
    to_builtins,
)
from configbus.connection import (
    connect,
    connect_read,
)
from configbus.counters import (
    FleetCounter,
    Lease,
    LeaseCaller,
    counter_key,
)
from configbus.crypto import (
    SecretBox,
    decrypt_secrets,
    encrypt_secrets,
    generate_key,
    mask_secrets,
    reencrypt_secrets,
    secrets_of,
    unmask_secrets,
)
from configbus.document import (
    Budget,
    CircuitBreaker,
    Document,
    IpRules,
    Price,
    Provider,
    RateLimit,
    Secret,
    Team,
)
from configbus.errors import (
    ConfigBusError,
    CorruptRecord,
    DamagedNamespace,
    DocumentError,
    IdempotencyMismatch,
    InvalidDocument,
    Issue,
    NamespaceNotEmpty,
    NotReplicated,
    RolloutConflict,
    RolloutRunning,
    SecretError,
    SettingsError,
    StoreError,
    StoreUnavailable,
    VersionConflict,
    VersionNotFound,
)
from configbus.escape import printable
from configbus.httpguard import GuardedProtocol
from configbus.keyset import KeyFollower, KeyTable, key_snapshot_path
from configbus.keystore import KeyConflict, KeyStore, hash_key
from configbus.llm import (
    document_decoder,
)
from configbus.logs import request_context
from configbus.names import (
    NAMESPACE_RULE,
    is_namespace,
)
from configbus.records import (
    AuditEntry,
    ReplicaInfo,
    ReplicaStatus,
)
from configbus.redis_calls import REDIS_ERRORS, guarded, store_error
from configbus.response_cache import ResponseStore
from configbus.rollout_store import (
    Baseline,
    RolloutStore,
    Step,
)
from configbus.settings import (
    BusSettings,
    check_fields,
    read_fields,
)
from configbus.signing import RecordSigner
from configbus.store import Export, Head, Kind, PublishResult, RecordMeta, Store, VersionRecord
from configbus.tracing import context_from_traceparent, traceparent_of, tracer_provider
from configbus.validation import (
    FRAMING_HEADERS,
    issue_from_msgspec,
    to_document,
)
from configbus.watcher import (
    Applied,
    SyncOutcome,
    Watcher,
    WatcherState,
)

__all__ = [
    "FRAMING_HEADERS",
    "MAX_DEPTH",
    "NAMESPACE_RULE",
    "REDIS_ERRORS",
    "Applied",
    "AuditEntry",
    "Baseline",
    "Breaker",
    "BreakerState",
    "Budget",
    "BusSettings",
    "CircuitBreaker",
    "ClientKey",
    "ConfigBusError",
    "CorruptRecord",
    "DamagedNamespace",
    "Document",
    "DocumentError",
    "Export",
    "FleetCounter",
    "GuardedProtocol",
    "Head",
    "IdempotencyMismatch",
    "InvalidDocument",
    "IpRules",
    "Issue",
    "KeyConflict",
    "KeyFollower",
    "KeyStore",
    "KeyTable",
    "Kind",
    "Lease",
    "LeaseCaller",
    "NamespaceNotEmpty",
    "NotReplicated",
    "Price",
    "Provider",
    "PublishResult",
    "RateLimit",
    "RecordMeta",
    "RecordSigner",
    "ReplicaInfo",
    "ReplicaStatus",
    "ResponseStore",
    "RolloutConflict",
    "RolloutRunning",
    "RolloutStore",
    "Secret",
    "SecretBox",
    "SecretError",
    "SettingsError",
    "Step",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "SyncOutcome",
    "Team",
    "VersionConflict",
    "VersionNotFound",
    "VersionRecord",
    "Watcher",
    "WatcherState",
    "api",
    "canonical",
    "check_fields",
    "clientkeys",
    "connect",
    "connect_read",
    "context_from_traceparent",
    "counter_key",
    "decode_body",
    "decrypt_secrets",
    "document_decoder",
    "encrypt_secrets",
    "generate_key",
    "guarded",
    "hash_key",
    "is_namespace",
    "issue_from_msgspec",
    "key_snapshot_path",
    "keystore",
    "load_file",
    "mask_secrets",
    "parse",
    "printable",
    "read_fields",
    "reencrypt_secrets",
    "request_context",
    "rollout",
    "scan_audit",
    "secrets_of",
    "sha256_hex",
    "store_error",
    "to_builtins",
    "to_document",
    "traceparent_of",
    "tracer_provider",
    "unmask_secrets",
    "usage",
    "variables",
]
