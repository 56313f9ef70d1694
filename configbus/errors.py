"""Every error configbus raises, in one place.

    ConfigBusError
    ├── DocumentError            a document is not acceptable
    │   ├── InvalidDocument      schema or semantic checks failed (carries every issue with its path)
    │   └── SecretError          a secret cannot be encrypted or decrypted with the keys at hand
    ├── StoreError               the store refused or could not do an operation
    │   ├── VersionConflict      expected version is not head (carries the current version)
    │   ├── VersionNotFound      no record for that version (trimmed, or never existed)
    │   ├── IdempotencyMismatch  an idempotency key was reused for a different request
    │   ├── NamespaceNotEmpty    an import into a namespace that has versions
    │   ├── RolloutRunning       a publish or a second rollout while a rollout runs
    │   ├── RolloutConflict      a rollout step on a rollout that ended or moved meanwhile
    │   ├── CorruptRecord        a record in Redis is unreadable or fails its checksum
    │   │   └── DamagedNamespace a namespace key (head, seq) holds what no admin wrote
    │   ├── NotReplicated        published, but fewer Redis replicas than required acked it
    │   └── StoreUnavailable     Redis cannot be reached (wraps the redis-py error)
    ├── SettingsError            a setting (env var, flag, file) has a bad value
    ├── AdminApiError            the admin service answered with an error (status, code, issues)
    └── AdminUnreachable         the admin service could not be reached

"Already up to date" and "older version" are outcomes of a sync, not errors: see
`configbus.watcher.SyncOutcome`.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec


class ConfigBusError(Exception):
    """Base class of every configbus error."""


class DocumentError(ConfigBusError):
    """A document is not acceptable."""


class Issue(msgspec.Struct, frozen=True):
    """One problem in a document: where (a JSON path like `models[2].name`) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidDocument(DocumentError):
    """Schema or semantic checks failed; `issues` holds every problem found, each with its path."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = list(issues)
        super().__init__("; ".join(str(i) for i in self.issues) or "invalid document")


class SecretError(DocumentError):
    """A secret cannot be encrypted or decrypted with the configured keys."""


class StoreError(ConfigBusError):
    """The store refused or could not do an operation."""


class VersionConflict(StoreError):
    """The caller's expected version is not the current head."""

    def __init__(self, expected: int, current: int) -> None:
        self.expected = expected
        self.current = current
        super().__init__(f"expected version {expected}, but the current version is {current}")


class VersionNotFound(StoreError):
    """No record exists for that version (trimmed by retention, or never published)."""

    def __init__(self, version: int) -> None:
        self.version = version
        super().__init__(f"version {version} not found")


class IdempotencyMismatch(StoreError):
    """An idempotency key was reused for a different request (action, query, If-Match or
    body): a retry must repeat the request it retries."""

    def __init__(self, key: str, version: int) -> None:
        self.key = key
        self.version = version
        super().__init__(
            f"idempotency key {key!r} was already used for version {version} by another request"
        )


class NamespaceNotEmpty(StoreError):
    """An import into a namespace that already has versions."""


class RolloutRunning(StoreError):
    """A rollout runs in the namespace: a plain publish or a second rollout must wait."""

    def __init__(self, rollout_id: str, version: int) -> None:
        self.rollout_id = rollout_id
        self.version = version
        super().__init__(
            f"rollout {rollout_id} of version {version} is running: promote or abort it first"
        )


class RolloutConflict(StoreError):
    """A rollout step found the rollout ended, gone or moved on since the caller looked."""


class CorruptRecord(StoreError):
    """A record in Redis is unreadable, or its body does not match its sha256."""

    def __init__(self, message: str, *, epoch: str | None = None, version: int | None = None):
        self.epoch = epoch
        self.version = version
        super().__init__(message)


class DamagedNamespace(CorruptRecord):
    """A namespace key holds what no admin wrote: a head that is not a version number, or
    one pointing at no record. A publish without If-Match repairs it."""


class NotReplicated(StoreError):
    """The version is published on the primary, but fewer Redis replicas than required
    acknowledged it in time: a failover now could lose it. A retry with the same
    idempotency key waits for the replicas again."""

    def __init__(self, version: int, acked: int, required: int, timeout_ms: int) -> None:
        self.version = version
        self.acked = acked
        self.required = required
        super().__init__(
            f"version {version} is published but reached {acked} of the {required} Redis "
            f"replica(s) required within {timeout_ms} ms; it may be lost if the primary fails "
            "now (retry with the same idempotency key to wait again)"
        )


class StoreUnavailable(StoreError):
    """Redis cannot be reached or timed out."""


class SettingsError(ConfigBusError):
    """A setting (environment variable, flag or file) has a bad value; the message names it."""


class AdminApiError(ConfigBusError):
    """The admin service answered with an error: its status, code, message and issues."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        issues: Sequence[Issue] = (),
        current_version: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        self.status, self.code, self.message = status, code, message
        self.issues = list(issues)
        self.current_version = current_version
        self.retry_after = retry_after
        text = f"{message} (HTTP {status} {code})"
        text += "".join(f"\n  {i}" for i in self.issues)
        if retry_after:
            text += f"\n  retry after {retry_after}s"
        super().__init__(text)


class AdminUnreachable(ConfigBusError):
    """The admin service could not be reached."""
