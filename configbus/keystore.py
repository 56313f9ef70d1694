"""The client key collection in Redis: changes (one script each), reads, and what a
replica loads. The layout and the entry type are in `configbus.clientkeys`.

Keys are generated here and returned once; only their sha256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Collection
from typing import Any

import msgspec
import redis.asyncio as aioredis

from configbus import lua
from configbus.clientkeys import (
    DEFAULT_LOG_CAP,
    ClientKey,
    KeyChange,
    KeyLayout,
    check_key_id,
    decode_change,
    decode_entry,
    entry_json,
)
from configbus.errors import CorruptRecord, StoreError
from configbus.records import text_of
from configbus.redis_calls import guarded

KEY_PREFIX = "sk-cb-"
# A hint carries its change when the change is at most this long (an entry is ~300 bytes).
DEFAULT_KEY_INLINE_BYTES = 8 * 1024
# Past this many missed changes a replica reloads whole rather than reading them.
MAX_CHANGES_PER_READ = 2_000
DEFAULT_AUDIT_MAXLEN = 10_000


class KeyConflict(StoreError):
    """A change refused: `reason` is exists | not_found | conflict | hash_taken. `audited`:
    the change script refused it, and wrote the audit entry saying so."""

    def __init__(self, reason: str, detail: str, message: str, *, audited: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.detail = detail
        self.audited = audited


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class CollectionState(msgspec.Struct, frozen=True):
    epoch: str | None
    rev: int


class KeyStore:
    """One namespace's client keys."""

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        *,
        log_cap: int = DEFAULT_LOG_CAP,
        inline_max_bytes: int = DEFAULT_KEY_INLINE_BYTES,
        audit_maxlen: int = DEFAULT_AUDIT_MAXLEN,
    ) -> None:
        self.redis = redis
        self.layout = KeyLayout(namespace)
        self.log_cap = log_cap
        self.inline_max_bytes = inline_max_bytes
        self.audit_maxlen = audit_maxlen
        self._change = redis.register_script(lua.KEY_CHANGE)
        self._read = redis.register_script(lua.KEY_READ)

    @property
    def namespace(self) -> str:
        return self.layout.namespace

    # -- changes -----------------------------------------------------------------------

    async def create(
        self,
        *,
        name: str,
        key_sha256: str | None = None,
        actor: str = "",
        reserved: Collection[str] = (),
        detail: str = "",
        **fields: Any,
    ) -> tuple[ClientKey, str | None]:
        """A new entry; with no `key_sha256`, a generated key, returned (the only time it
        is ever seen). `reserved`: hashes taken elsewhere (the document's own clients).
        `detail` goes to the audit entry (never a key)."""
        key = None
        if key_sha256 is None:
            key = new_key()
            key_sha256 = hash_key(key)
            fields.setdefault("key_prefix", key[: len(KEY_PREFIX) + 4])
        if key_sha256 in reserved:
            raise KeyConflict(
                "hash_taken", "document", "this key's hash belongs to a client in the document"
            )
        now = time.time()
        entry = ClientKey(
            id=fields.pop("id", None) or new_key_id(),
            name=name,
            key_sha256=key_sha256,
            created_at=now,
            updated_at=now,
            **fields,
        )
        stored = await self._write(entry, "", actor, "key.create", entry.hashes(now), (), detail)
        return stored, key

    async def update(
        self,
        key_id: str,
        *,
        expected: int | None = None,
        actor: str = "",
        detail: str = "",
        **changes: Any,
    ) -> ClientKey:
        """The entry with `changes` applied (`expected`: the revision the caller saw)."""
        cur = await self._current(key_id, expected)
        for f in ("id", "key_sha256", "revision", "created_at", "key_prefix"):
            if f in changes:
                raise ValueError(f"{f} cannot be changed")
        entry = msgspec.structs.replace(cur, updated_at=time.time(), **changes)
        return await self._put(cur, entry, actor, "key.update", detail)

    async def rotate(
        self,
        key_id: str,
        *,
        grace_s: float,
        expected: int | None = None,
        actor: str = "",
        detail: str = "",
    ) -> tuple[ClientKey, str]:
        """A new key for the entry; the old one keeps working for `grace_s` seconds."""
        if not 0 <= grace_s <= 90 * 86400:
            raise ValueError("grace_s must be between 0 and 90 days")
        cur = await self._current(key_id, expected)
        key = new_key()
        now = time.time()
        entry = msgspec.structs.replace(
            cur,
            key_sha256=hash_key(key),
            key_prefix=key[: len(KEY_PREFIX) + 4],
            previous_sha256=cur.key_sha256 if grace_s > 0 else None,
            previous_expires_at=now + grace_s if grace_s > 0 else None,
            updated_at=now,
        )
        return await self._put(cur, entry, actor, "key.rotate", detail), key

    async def revoke(
        self, key_id: str, *, expected: int | None = None, actor: str = "", detail: str = ""
    ) -> int:
        """Remove the entry (its keys answer 401 everywhere); returns the revision."""
        cur = await self._current(key_id, expected)
        reply = await self._call(
            key_id, str(cur.revision), b"", (), (cur.key_sha256, cur.previous_sha256 or ""),
            actor, "key.revoke", detail,
        )  # fmt: skip
        return int(reply[1])

    async def _current(self, key_id: str, expected: int | None) -> ClientKey:
        """The entry as stored, if it is still at the revision the caller saw (`expected`)."""
        cur = await self.get(key_id)
        if expected is not None and cur.revision != expected:
            raise _refused("conflict", str(cur.revision), key_id)
        return cur

    async def _put(
        self, cur: ClientKey, entry: ClientKey, actor: str, action: str, detail: str
    ) -> ClientKey:
        now = time.time()
        own = entry.hashes(now)
        drop = tuple(h for h in (cur.key_sha256, cur.previous_sha256 or "") if h not in own)
        return await self._write(entry, str(cur.revision), actor, action, own, drop, detail)

    async def _write(
        self,
        entry: ClientKey,
        expected: str,
        actor: str,
        action: str,
        own: Collection[str],
        drop: Collection[str],
        detail: str = "",
    ) -> ClientKey:
        check_key_id(entry.id)
        reply = await self._call(
            entry.id, expected, entry_json(entry), own, drop, actor, action, detail
        )
        return msgspec.structs.replace(entry, revision=int(reply[1]))

    async def _call(
        self,
        key_id: str,
        expected: str,
        body: bytes,
        own: Collection[str],
        drop: Collection[str],
        actor: str,
        action: str,
        detail: str = "",
    ) -> list[Any]:
        keys, args = self.change_call(key_id, expected, body, own, drop, actor, action, detail)
        reply = await guarded(self._change(keys=keys, args=args), f"{action} {key_id}")
        outcome = text_of(reply[0])
        if outcome != "ok":
            raise _refused(outcome, text_of(reply[1]), key_id, audited=True)
        return list(reply)

    def change_call(
        self,
        key_id: str,
        expected: str,
        body: bytes,
        own: Collection[str],
        drop: Collection[str],
        actor: str,
        action: str,
        detail: str = "",
    ) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of one `lua.KEY_CHANGE` call (a bulk loader pipelines these)."""
        L = self.layout
        keys = [L.entries, L.by_hash, L.rev, L.epoch, L.log, L.audit]
        args: list[Any] = [
            key_id, expected, body, " ".join(own), " ".join(h for h in drop if h),
            secrets.token_hex(8), self.log_cap, action, actor, self.audit_maxlen,
            L.changes, self.inline_max_bytes, detail,
        ]  # fmt: skip
        return keys, args

    # -- reads -------------------------------------------------------------------------

    async def get(self, key_id: str) -> ClientKey:
        check_key_id(key_id)
        raw = await guarded(self.redis.hget(self.layout.entries, key_id), f"read key {key_id}")
        if raw is None:
            raise _refused("not_found", key_id, key_id)
        return _entry(raw, key_id)

    async def find(self, key_sha256: str) -> ClientKey | None:
        """The entry a key hash reaches, if any."""
        key_id = await guarded(self.redis.hget(self.layout.by_hash, key_sha256), "find key")
        if key_id is None:
            return None
        raw = await guarded(self.redis.hget(self.layout.entries, key_id), "find key")
        return None if raw is None else _entry(raw, text_of(key_id))

    async def taken(self, hashes: Collection[str]) -> list[str]:
        """Which of `hashes` belong to entries of the collection."""
        return list(await self.owners(hashes))

    async def owners(self, hashes: Collection[str]) -> dict[str, str]:
        """The id of the entry each of `hashes` belongs to, for those that belong to one."""
        if not hashes:
            return {}
        wanted = list(hashes)
        found = await guarded(self.redis.hmget(self.layout.by_hash, wanted), "find keys")
        return {h: text_of(o) for h, o in zip(wanted, found, strict=True) if o is not None}

    async def page(
        self,
        cursor: str | None = None,
        *,
        count: int = 100,
        team: str | None = None,
        tag: str | None = None,
    ) -> tuple[list[ClientKey], str | None]:
        """Up to `count` entries matching the filters, by id within a page, and the cursor
        of the next page (None: no more). A filtered page may hold fewer while more follow.
        The cursor (`<HSCAN cursor>-<entries of that batch already given>`) is opaque: as
        with HSCAN, an entry changed meanwhile may be given twice or not at all."""
        scan, skip = parse_cursor(cursor)
        out: list[ClientKey] = []
        scanned = 0
        while True:
            nxt, batch = await guarded(
                self.redis.hscan(self.layout.entries, scan, count=max(count, 100)), "list keys"
            )
            scanned += len(batch)
            found = sorted((_entry(v, text_of(k)) for k, v in batch.items()), key=lambda e: e.id)
            matched = [
                e
                for e in found
                if (team is None or e.team == team) and (tag is None or tag in e.tags)
            ]
            wanted = count - len(out)
            if len(matched) - skip > wanted:
                out += matched[skip : skip + wanted]
                return out, f"{scan}-{skip + wanted}"
            out += matched[skip:]
            scan, skip = int(nxt), 0
            if scan == 0:
                return out, None
            if len(out) == count or scanned >= 20 * max(count, 100):
                return out, f"{scan}-0"

    async def state(self) -> CollectionState:
        epoch, rev = await guarded(
            self.redis.mget([self.layout.epoch, self.layout.rev]), "key collection state"
        )
        return CollectionState(None if epoch is None else text_of(epoch), int(rev or 0))

    async def changes_since(
        self, held: int, most: int = MAX_CHANGES_PER_READ
    ) -> tuple[CollectionState, list[KeyChange] | None]:
        """Where the collection is and the changes after revision `held` (None: a gap, or
        more than `most`: reload whole)."""
        L = self.layout
        reply = await guarded(
            self._read(keys=[L.epoch, L.rev, L.log], args=[held, most]), "read key changes"
        )
        state = CollectionState(None if reply[0] is None else text_of(reply[0]), int(reply[1]))
        if len(reply) > 2 and reply[2] == b"gap":
            return state, None
        try:
            return state, [decode_change(c) for c in reply[2:]]
        except msgspec.DecodeError as exc:
            raise CorruptRecord(f"{L.log}: unreadable change ({exc})") from None

    async def scan(self, batch: int = 2_000) -> AsyncIterator[list[ClientKey]]:
        """Every entry, in batches (HSCAN: entries changed meanwhile may or may not be in;
        a loader replays the log from the revision it read first)."""
        cursor = 0
        while True:
            cursor, found = await guarded(
                self.redis.hscan(self.layout.entries, cursor, count=batch), "load keys"
            )
            yield [_entry(v, text_of(k)) for k, v in found.items()]
            if cursor == 0:
                return


def parse_cursor(cursor: str | None) -> tuple[int, int]:
    scan, _, skip = (cursor or "0").partition("-")
    if not (
        scan.isascii() and scan.isdigit() and (not skip or (skip.isascii() and skip.isdigit()))
    ):
        raise ValueError(f"{cursor!r} is not a cursor a page of keys gave")
    if int(scan) >= 2**64:  # Redis's cursors are unsigned 64-bit: larger is none it gave
        raise ValueError(f"{cursor!r} is not a cursor a page of keys gave")
    return int(scan), int(skip or 0)


def _entry(raw: bytes | str, where: str) -> ClientKey:
    try:
        return decode_entry(raw)
    except msgspec.DecodeError as exc:
        raise CorruptRecord(f"key {where}: unreadable entry ({exc})") from None


_MESSAGES = {
    "exists": "a key with id {d} exists already",
    "not_found": "no key {d}",
    "conflict": "the key changed meanwhile (its revision is now {d})",
    "hash_taken": "this key's hash belongs to another key ({d})",
}


def _refused(reason: str, detail: str, key_id: str, *, audited: bool = False) -> KeyConflict:
    msg = _MESSAGES.get(reason, "refused: {d}").format(d=detail or key_id)
    return KeyConflict(reason, detail, msg, audited=audited)
