"""Secrets at rest: Fernet encryption with key rotation, and the masked view.

`CONFIGBUS_SECRET_KEYS` holds one or more Fernet keys, newest first: the newest encrypts,
all of them decrypt, so a key can be rotated in by prepending it, re-encrypting (a new
version), and dropping the old key once every replica runs that version.

The walkers here work on any msgspec struct tree that uses `configbus.Secret`, so a
service with its own schema gets the same treatment.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
import msgspec.inspect
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from configbus.document import Secret
from configbus.errors import InvalidDocument, Issue, SecretError, SettingsError

T = TypeVar("T")
MASK_PREFIX = "sha256:"


def generate_key() -> str:
    return Fernet.generate_key().decode()


def fingerprint(token: str) -> str:
    """The masked form of an encrypted secret: a digest of the ciphertext, never of the plaintext."""
    return MASK_PREFIX + hashlib.sha256(token.encode()).hexdigest()[:24]


class SecretBox:
    """Encrypts with the newest key, decrypts with any of them."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SettingsError("CONFIGBUS_SECRET_KEYS: at least one Fernet key is needed")
        fernets = []
        for i, key in enumerate(keys):
            try:
                fernets.append(Fernet(key.strip().encode()))
            except (ValueError, TypeError):
                raise SettingsError(
                    f"CONFIGBUS_SECRET_KEYS: key #{i + 1} is not a valid Fernet key "
                    "(32 url-safe base64-encoded bytes; make one with `configbus keygen`)"
                ) from None
        self._multi = MultiFernet(fernets)
        self.keys = tuple(k.strip() for k in keys)  # newest first, as given

    @classmethod
    def from_string(cls, value: str) -> SecretBox:
        return cls([k for k in value.split(",") if k.strip()])

    def encrypt(self, plaintext: str) -> str:
        return self._multi.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str, where: str = "") -> str:
        try:
            return self._multi.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise SecretError(
                f"{where}: cannot decrypt secret with any configured key"
                if where
                else "cannot decrypt secret with any configured key"
            ) from None

    def rotate(self, token: str, where: str = "") -> str:
        try:
            return self._multi.rotate(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise SecretError(
                f"{where}: cannot re-encrypt secret: no configured key fits"
            ) from None


def map_secrets(value: T, fn: Callable[[Secret, str], Secret], path: str = "") -> T:
    """Return `value` with every Secret replaced by fn(secret, json_path); shares untouched parts."""
    return _map(value, fn, path)  # type: ignore[no-any-return]


@functools.cache
def _secret_fields(cls: type[msgspec.Struct]) -> tuple[tuple[str, str], ...]:
    """(attribute, JSON name) of the fields of `cls` whose type can hold a Secret: the walk
    visits only those, so a large document costs what its secrets cost, not its size."""
    return tuple(
        (f.name, f.encode_name)
        for f in msgspec.inspect.type_info(cls).fields  # type: ignore[attr-defined]
        if _can_hold_secret(f.type, frozenset())
    )


def _can_hold_secret(t: Any, seen: frozenset[type]) -> bool:
    mi = msgspec.inspect
    if isinstance(t, mi.StructType):
        if t.cls is Secret:
            return True
        if t.cls in seen:
            return False
        return any(_can_hold_secret(f.type, seen | {t.cls}) for f in t.fields)
    if isinstance(t, mi.UnionType):
        return any(_can_hold_secret(x, seen) for x in t.types)
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return _can_hold_secret(t.item_type, seen)
    if isinstance(t, mi.DictType):
        return _can_hold_secret(t.value_type, seen)
    if isinstance(t, mi.TupleType):
        return any(_can_hold_secret(x, seen) for x in t.item_types)
    return False


def _map(value: Any, fn: Callable[[Secret, str], Secret], path: str) -> Any:
    if isinstance(value, Secret):
        return fn(value, path)
    if isinstance(value, msgspec.Struct):
        changes = {}
        for name, json_name in _secret_fields(type(value)):
            old = getattr(value, name)
            new = _map(old, fn, f"{path}.{json_name}" if path else json_name)
            if new is not old:
                changes[name] = new
        return msgspec.structs.replace(value, **changes) if changes else value
    if isinstance(value, list | tuple):
        items = [_map(v, fn, f"{path}[{i}]") for i, v in enumerate(value)]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items)
    if isinstance(value, dict):
        mapped = {k: _map(v, fn, f"{path}.{k}") for k, v in value.items()}
        return mapped if any(mapped[k] is not value[k] for k in value) else value
    return value


def secrets_of(value: Any) -> list[tuple[str, Secret]]:
    found: list[tuple[str, Secret]] = []

    def collect(s: Secret, path: str) -> Secret:
        found.append((path, s))
        return s

    map_secrets(value, collect)
    return found


def encrypt_secrets(doc: T, box: SecretBox, *, previous: Any = None) -> T:
    """Plaintext secrets → Fernet tokens. Already-encrypted ones stay as they are.

    With `previous` (the stored document), a plaintext equal to the secret stored at the same
    path keeps its stored token: Fernet's random IV would otherwise make re-publishing the
    same file a new version, and an idempotent retry a mismatch.
    """
    stored = {path: s.encrypted for path, s in secrets_of(previous) if s.encrypted is not None}

    def enc(s: Secret, path: str) -> Secret:
        if s.secret is None:
            return s
        token = stored.get(path)
        if token is not None:
            try:
                if hmac.compare_digest(box.decrypt(token, path).encode(), s.secret.encode()):
                    return Secret(encrypted=token)
            except SecretError:
                pass  # stored under a key we no longer hold: encrypt afresh
        return Secret(encrypted=box.encrypt(s.secret))

    return map_secrets(doc, enc)


def decrypt_secrets(doc: T, box: SecretBox) -> T:
    """Fernet tokens → plaintext, inside a replica only. A stored plaintext or masked secret
    is refused: it means something bypassed the admin."""

    def dec(s: Secret, path: str) -> Secret:
        if s.encrypted is not None:
            return Secret(secret=box.decrypt(s.encrypted, path))
        if s.secret is not None:
            raise SecretError(f"{path}: plaintext secret found in a stored document")
        raise SecretError(f"{path}: masked secret found in a stored document")

    return map_secrets(doc, dec)


def reencrypt_secrets(doc: T, box: SecretBox) -> T:
    """Every token re-encrypted with the newest key (for key rotation)."""
    return map_secrets(
        doc,
        lambda s, p: Secret(encrypted=box.rotate(s.encrypted, p)) if s.encrypted is not None else s,
    )


def mask_secrets(doc: T) -> T:
    """The view for people: each secret shown as a digest of its ciphertext."""

    def mask(s: Secret, path: str) -> Secret:
        if s.encrypted is not None:
            return Secret(masked=fingerprint(s.encrypted))
        if s.secret is not None:
            return Secret(masked="sha256:plaintext")
        return s

    return map_secrets(doc, mask)


def unmask_secrets(doc: T, stored: Any) -> T:
    """Put the stored ciphertext back where a caller sent a masked secret unchanged."""
    by_mask = {
        fingerprint(s.encrypted): s.encrypted
        for _, s in secrets_of(stored)
        if s.encrypted is not None
    }
    missing: list[Issue] = []

    def unmask(s: Secret, path: str) -> Secret:
        if s.masked is None:
            return s
        token = by_mask.get(s.masked)
        if token is None:
            missing.append(
                Issue(path, "masked secret matches no stored secret; send the secret itself")
            )
            return s
        return Secret(encrypted=token)

    result = map_secrets(doc, unmask)
    if missing:
        raise InvalidDocument(missing)
    return result
