"""What a watcher holds and what one sync did: plain values, never mutated."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Generic, TypeVar

R = TypeVar("R")


class SyncOutcome(enum.Enum):
    """What one sync did. Only REJECTED is bad news; the rest are ordinary outcomes."""

    APPLIED = "applied"
    UP_TO_DATE = "up_to_date"  # head is what we run (or a version we already rejected)
    NO_HEAD = "no_head"  # nothing published in the store's lineage: keep serving what we have
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"  # Redis unreachable: keep serving, retry on the next trigger


class WatcherState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Applied(Generic[R]):
    """One applied version: what it is, and the value built from it. Never mutated."""

    version: int
    epoch: str
    sha256: str
    value: R
    applied_at: float
    stale: bool = False  # not (yet) confirmed by Redis as the store's head
    staged: bool = False  # a running rollout's version, not head


@dataclass(frozen=True, slots=True)
class _Rejected:
    epoch: str
    version: int
    sha256: str  # "*" when the record was unreadable: any record at that version is the same
    reason: str
