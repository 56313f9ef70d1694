"""What the admin asks of a namespace's client key collection besides the key endpoints: the
collection's store for a request, its refusals as answers, and the rule that a key lives in
one place (a document whose `clients` name a hash of the collection is not published)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from admin.answers import ApiError
from configbus.document import Document
from configbus.errors import Issue
from configbus.keystore import KeyConflict, KeyStore

if TYPE_CHECKING:
    from admin.http import Ctx


def key_store(ctx: Ctx) -> KeyStore:
    return KeyStore(ctx.svc.redis, ctx.namespace, audit_maxlen=ctx.store.audit_maxlen)


async def refuse_collection_hashes(ctx: Ctx, doc: Document) -> None:
    """409 when a client of `doc` has a key hash that belongs to a key of the collection."""
    if not doc.clients:
        return
    ks = key_store(ctx)
    owners = await ctx.run(lambda: ks.owners([c.key_sha256 for c in doc.clients]))
    if not owners:
        return
    issues = [
        Issue(
            f"clients[{i}].key_sha256",
            f"client {c.name!r}: this key's hash belongs to key {owners[c.key_sha256]} of the "
            "key collection (a key lives in one place: remove the client, or revoke the key)",
        )
        for i, c in enumerate(doc.clients)
        if c.key_sha256 in owners
    ]
    raise ApiError(
        409,
        "key_hash_in_collection",
        f"{issues[0].path}: the key collection has this key already",
        issues=issues,
    )


def key_refusal(ctx: Ctx, exc: KeyConflict) -> ApiError:
    """A refused key change as its answer. The change script audits what it refuses."""
    ctx.audited = exc.audited
    if exc.reason == "not_found":
        return ApiError(404, "key_not_found", str(exc))
    if exc.reason == "exists":
        return ApiError(409, "key_exists", str(exc))
    if exc.reason == "conflict":
        current = int(exc.detail) if exc.detail.isdigit() else None
        return ApiError(
            409,
            "revision_conflict",
            f'{exc}; read it again and retry with If-Match: "{current}"',
            current_revision=current,
            headers={} if current is None else {"ETag": f'"{current}"'},
        )
    if exc.reason == "hash_taken" and exc.detail == "document":
        return ApiError(
            409,
            "key_hash_in_document",
            "a client of head's document has this key's hash: move the document's clients "
            "into the collection with `configbus keys import`, or remove it from the document",
            issues=[Issue("key_sha256", "a client of head's document has this hash")],
        )
    if exc.reason == "hash_taken":
        return ApiError(
            409,
            "key_hash_taken",
            f"this key's hash belongs to key {exc.detail}",
            issues=[Issue("key_sha256", f"key {exc.detail} has this hash")],
        )
    return ApiError(409, "key_refused", str(exc))
