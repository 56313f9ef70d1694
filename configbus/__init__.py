"""configbus: versioned config documents in Redis, published atomically, applied live."""

from configbus.codec import canonical, decode_body, load_file, parse, sha256_hex
from configbus.connection import connect
from configbus.crypto import (
    SecretBox,
    decrypt_secrets,
    encrypt_secrets,
    generate_key,
    mask_secrets,
    reencrypt_secrets,
    unmask_secrets,
)
from configbus.document import Document, Secret
from configbus.errors import (
    ConfigBusError,
    CorruptRecord,
    DocumentError,
    IdempotencyMismatch,
    InvalidDocument,
    Issue,
    SecretError,
    SettingsError,
    StoreError,
    StoreUnavailable,
    VersionConflict,
    VersionNotFound,
)
from configbus.llm import document_decoder
from configbus.settings import BusSettings
from configbus.store import (
    Head,
    PublishResult,
    RecordMeta,
    ReplicaInfo,
    ReplicaStatus,
    Store,
    VersionRecord,
)
from configbus.validation import to_document
from configbus.watcher import Applied, SyncOutcome, Watcher, WatcherState

__all__ = [
    "Applied",
    "BusSettings",
    "ConfigBusError",
    "CorruptRecord",
    "Document",
    "DocumentError",
    "Head",
    "IdempotencyMismatch",
    "InvalidDocument",
    "Issue",
    "PublishResult",
    "RecordMeta",
    "ReplicaInfo",
    "ReplicaStatus",
    "Secret",
    "SecretBox",
    "SecretError",
    "SettingsError",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "SyncOutcome",
    "VersionConflict",
    "VersionNotFound",
    "VersionRecord",
    "Watcher",
    "WatcherState",
    "canonical",
    "connect",
    "decode_body",
    "decrypt_secrets",
    "document_decoder",
    "encrypt_secrets",
    "generate_key",
    "load_file",
    "mask_secrets",
    "parse",
    "reencrypt_secrets",
    "sha256_hex",
    "to_document",
    "unmask_secrets",
]
