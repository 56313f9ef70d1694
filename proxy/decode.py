"""Stored body → Document with provider API keys decrypted, fast enough to run per reload.

`configbus.crypto.decrypt_secrets` walks every struct of the document generically, which
costs about a millisecond per document (more with more providers, models and clients) on
the replica's event loop at every reload. The only secret in the schema is
`providers[].api_key`, so the replica decrypts exactly those, and checks that claim
against the schema once at import: if the schema ever grows another secret, it falls back
to the generic walker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import inspect as mi

from configbus.codec import decode_body
from configbus.crypto import SecretBox, decrypt_secrets, secrets_of
from configbus.document import Document, Secret
from configbus.errors import SecretError


def secret_paths(t: Any, path: str = "", seen: frozenset[type] = frozenset()) -> set[str]:
    """Paths (like `providers[].api_key`) of every Secret in a msgspec type."""
    if isinstance(t, mi.StructType):
        if t.cls is Secret:
            return {path}
        if t.cls in seen:
            return set()
        out: set[str] = set()
        for f in t.fields:
            out |= secret_paths(
                f.type, f"{path}.{f.encode_name}" if path else f.encode_name, seen | {t.cls}
            )
        return out
    if isinstance(t, mi.UnionType):
        return set().union(*(secret_paths(x, path, seen) for x in t.types))
    if isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        return secret_paths(t.item_type, path + "[]", seen)
    if isinstance(t, mi.DictType):
        return secret_paths(t.value_type, path + "{}", seen)
    return set()


ONLY_PROVIDER_KEYS = secret_paths(mi.type_info(Document)) == {"providers[].api_key"}


def decrypt_provider_keys(doc: Document, box: SecretBox) -> Document:
    providers = []
    for i, p in enumerate(doc.providers):
        s = p.api_key
        if s is not None:
            where = f"providers[{i}].api_key"
            if s.encrypted is not None:
                s = Secret(secret=box.decrypt(s.encrypted, where))
            elif s.secret is not None:
                raise SecretError(f"{where}: plaintext secret found in a stored document")
            else:
                raise SecretError(f"{where}: masked secret found in a stored document")
            p = msgspec.structs.replace(p, api_key=s)
        providers.append(p)
    return msgspec.structs.replace(doc, providers=providers)


def make_decoder(keys: tuple[str, ...]) -> Callable[[bytes], Document]:
    """bytes → Document with secrets decrypted (refused when no keys are configured)."""
    box = SecretBox(keys) if keys else None

    def decode(body: bytes) -> Document:
        doc = decode_body(body)
        if box is None:
            if secrets_of(doc):
                raise SecretError(
                    "document holds encrypted secrets but CONFIGBUS_SECRET_KEYS is not set"
                )
            return doc
        if ONLY_PROVIDER_KEYS:
            return decrypt_provider_keys(doc, box)
        return decrypt_secrets(doc, box)

    return decode
