"""Client keys as a keyed collection beside the document: the entry type and its layout.

A namespace's client keys (a key per developer, team, app) change all day; republishing
the document for each would make every replica read and decode all of them. So each key
is an entry of its own, with the collection's revision at its last change:

    cb:{ns}:ck          HASH  id → entry JSON (`{"revision":N,...}`)
    cb:{ns}:ck:hash     HASH  sha256 of a key → id (the current key, and a rotated-out
                              one during its grace period): a hash belongs to one entry
    cb:{ns}:ck:rev      the collection's revision (one per change)
    cb:{ns}:ck:epoch    lineage id: a new one means "what you hold is from another store"
    cb:{ns}:ck:log      ZSET  the last changes, scored by revision, each carrying the
                              whole entry after the change (or `null`: revoked)
    channel cb:{ns}:ck:changes   `{"epoch":…,"rev":N}`, a newline, the change itself

A replica holds the collection in memory: it loads it whole at start and afterwards
applies the changes the hints carry, reading the log only when it missed one (and
reloading whole when the log no longer reaches back that far).
"""

from __future__ import annotations

import re
import time
from typing import Annotated

import msgspec
from msgspec import Meta

from configbus.document import Budget, Name, RateLimit, Sha256Hex
from configbus.names import check_namespace

KEY_ID_PATTERN = r"^key_[A-Za-z0-9_-]{1,64}$"
_key_id = re.compile(KEY_ID_PATTERN)
KeyId = Annotated[str, Meta(pattern=KEY_ID_PATTERN)]
Tag = Annotated[str, Meta(min_length=1, max_length=64)]
MetaValue = str | int | float | bool | None

# Changes kept in the log: a replica that missed more than this many reloads whole.
DEFAULT_LOG_CAP = 10_000


def check_key_id(value: str) -> str:
    if not _key_id.match(value):
        raise ValueError(f"{value!r} is not a key id: 'key_' then 1-64 letters, digits, '_' or '-'")
    return value


class ClientKey(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """One client key as stored: never the key itself, only its sha256."""

    id: KeyId
    name: Name
    key_sha256: Sha256Hex
    revision: int = 0  # the collection's revision at this entry's last change
    models: tuple[str, ...] = ("*",)
    rate_limit: RateLimit | None = None
    budget: Budget | None = None
    team: Name | None = None
    tags: tuple[Tag, ...] = ()
    metadata: dict[str, MetaValue] = {}
    enabled: bool = True
    expires_at: float | None = None  # unix seconds; the key answers 401 from then on
    # The key a rotation replaced: it keeps working until `previous_expires_at`.
    previous_sha256: Sha256Hex | None = None
    previous_expires_at: float | None = None
    key_prefix: str | None = None  # the first characters of a generated key, to recognise it
    created_at: float = 0.0
    updated_at: float = 0.0

    def hashes(self, now: float | None = None) -> tuple[str, ...]:
        """The key hashes that reach this entry (a rotated-out one only during its grace)."""
        if self.previous_sha256 is not None and (
            self.previous_expires_at is None
            or self.previous_expires_at > (time.time() if now is None else now)
        ):
            return (self.key_sha256, self.previous_sha256)
        return (self.key_sha256,)

    def usable(self, sha256: str, now: float) -> bool:
        """May a request bearing the key with this hash use the entry now?"""
        if not self.enabled or (self.expires_at is not None and now >= self.expires_at):
            return False
        if sha256 == self.key_sha256:
            return True
        return (
            sha256 == self.previous_sha256
            and self.previous_expires_at is not None
            and now < self.previous_expires_at
        )


class KeyChange(msgspec.Struct, frozen=True):
    """One change of the collection: the entry after it, or None when it was revoked."""

    rev: int
    id: str
    entry: ClientKey | None


class KeyHint(msgspec.Struct, frozen=True):
    epoch: str
    rev: int


class KeyLayout:
    """The Redis names of one namespace's key collection (the namespace's hash tag)."""

    def __init__(self, namespace: str) -> None:
        check_namespace(namespace)
        p = f"cb:{{{namespace}}}:ck"
        self.namespace = namespace
        self.entries, self.by_hash, self.rev = p, p + ":hash", p + ":rev"
        self.epoch, self.log, self.changes = p + ":epoch", p + ":log", p + ":changes"
        self.audit = f"cb:{{{namespace}}}:audit"  # the namespace's one audit stream


_entry_decoder = msgspec.json.Decoder(ClientKey)
_change_decoder = msgspec.json.Decoder(KeyChange)
_hint_decoder = msgspec.json.Decoder(KeyHint)
_encode = msgspec.json.Encoder().encode


def decode_entry(raw: bytes | str) -> ClientKey:
    return _entry_decoder.decode(raw)


def decode_change(raw: bytes | str) -> KeyChange:
    return _change_decoder.decode(raw)


def parse_key_hint(data: bytes) -> tuple[KeyHint, KeyChange | None]:
    """A hint: its header, and the change it carries (None when too big to carry)."""
    head, _, rest = data.partition(b"\n")
    hint = _hint_decoder.decode(head)
    return hint, (_change_decoder.decode(rest) if rest else None)


def entry_json(entry: ClientKey) -> bytes:
    """An entry as the change script takes it: without `revision` (the script writes it
    first, so the stored JSON starts `{"revision":N,`)."""
    body = _encode(msgspec.structs.replace(entry, revision=0))
    if not body.startswith(b'{"id":'):
        raise AssertionError("an entry encodes with its id first")
    return body
