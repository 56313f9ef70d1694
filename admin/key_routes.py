"""The client key endpoints: create (the key answered once), list, show, change, rotate and
revoke the keys of a namespace's collection (`configbus.keystore`). Writes need the
`publish` permission, as publishing does; each change's script writes its audit entry (a
refusal before the script ran is audited by `endpoint` as any other)."""

from __future__ import annotations

import msgspec
from msgspec import UNSET
from starlette.responses import Response

from admin.answers import JSON, ApiError
from admin.http import Ctx, endpoint
from admin.keys import key_refusal, key_store
from admin.routes import head_document
from configbus.api import (
    KeyCreateRequest,
    KeyIssued,
    KeyPage,
    KeyRevoked,
    KeyRotateRequest,
    KeysQuery,
    KeyUpdateRequest,
)
from configbus.clientkeys import ClientKey, check_key_id
from configbus.document import Document, RateLimit
from configbus.errors import Issue
from configbus.keystore import KeyConflict, parse_cursor


def _key_id(ctx: Ctx) -> str:
    raw = ctx.request.path_params.get("id", "")
    try:
        key_id = check_key_id(raw)
    except ValueError:
        raise ApiError(
            400, "bad_request", "key id must be 'key_' then 1-64 letters, digits, '_' or '-'"
        ) from None
    ctx.audit_fields["key_id"] = key_id
    return key_id


def _issues(
    doc: Document | None, models: list[str] | None, rate_limit: RateLimit | None
) -> list[Issue]:
    """What the body's types cannot say: models head knows, a limit that limits."""
    issues = []
    if doc is not None and models is not None:
        known = {m.name for m in doc.models} | {"*"}
        issues += [
            Issue(f"models[{i}]", f"unknown model {m!r}: head's document has no such model")
            for i, m in enumerate(models)
            if m not in known
        ]
    if rate_limit is not None and rate_limit.rpm is None and rate_limit.tpm is None:
        issues.append(Issue("rate_limit", "set rpm, tpm or both"))
    return issues


def _refuse(issues: list[Issue]) -> None:
    if issues:
        raise ApiError(422, "invalid_key", f"the key is not valid: {issues[0]}", issues=issues)


def _etag(entry: ClientKey) -> dict[str, str]:
    return {"ETag": f'"{entry.revision}"'}


def _issued(ctx: Ctx, entry: ClientKey, key: str | None, status: int) -> Response:
    ctx.audit_fields["revision"] = entry.revision
    location = f"/v1/namespaces/{ctx.namespace}/keys/{entry.id}"
    return JSON(
        KeyIssued(key=key, entry=entry),
        status_code=status,
        headers={**_etag(entry), "Location": location},
    )


@endpoint("key.create", "publish")
async def create_key(ctx: Ctx) -> Response:
    req = await ctx.json(KeyCreateRequest)
    doc = await head_document(ctx)
    issues = _issues(doc, req.models, req.rate_limit)
    if req.adopt and req.key_sha256 is None:
        issues.append(Issue("adopt", "adopting a client of the document needs its key_sha256"))
    _refuse(issues)
    reserved = set() if doc is None or req.adopt else {c.key_sha256 for c in doc.clients}
    fields = msgspec.structs.asdict(req)
    del fields["adopt"], fields["name"], fields["key_sha256"]
    fields.update(models=tuple(req.models), tags=tuple(req.tags))
    how = "adopted" if req.adopt else "brought" if req.key_sha256 else "generated"
    ks = key_store(ctx)
    try:
        entry, key = await ctx.run(
            lambda: ks.create(
                name=req.name,
                key_sha256=req.key_sha256,
                actor=ctx.token.name,
                reserved=reserved,
                detail=f"name={req.name} key={how}",
                **fields,
            )
        )
    except KeyConflict as exc:
        raise key_refusal(ctx, exc) from None
    ctx.audited = True  # the change script wrote the entry
    return _issued(ctx, entry, key, 201)


@endpoint("keys", "read")
async def list_keys(ctx: Ctx) -> Response:
    q = ctx.query(KeysQuery)
    try:
        parse_cursor(q.cursor)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"cursor: {exc}") from None
    ks = key_store(ctx)
    entries, nxt = await ctx.run(lambda: ks.page(q.cursor, count=q.count, team=q.team, tag=q.tag))
    return JSON(KeyPage(keys=entries, next_cursor=nxt))


@endpoint("key", "read")
async def get_key(ctx: Ctx) -> Response:
    key_id = _key_id(ctx)
    ks = key_store(ctx)
    try:
        entry = await ctx.run(lambda: ks.get(key_id))
    except KeyConflict as exc:
        raise key_refusal(ctx, exc) from None
    return JSON(entry, headers=_etag(entry))


@endpoint("key.update", "publish")
async def update_key(ctx: Ctx) -> Response:
    key_id = _key_id(ctx)
    req = await ctx.json(KeyUpdateRequest)
    expected = ctx.if_match()
    changes = {k: v for k, v in msgspec.structs.asdict(req).items() if v is not UNSET}
    if not changes:
        raise ApiError(
            422,
            "invalid_key",
            "nothing to change: give at least one field",
            issues=[Issue("", "give at least one field")],
        )
    models = changes.get("models")
    doc = await head_document(ctx) if models is not None else None
    _refuse(_issues(doc, models, changes.get("rate_limit")))
    for f in ("models", "tags"):
        if f in changes:
            changes[f] = tuple(changes[f])
    ks = key_store(ctx)
    try:
        entry = await ctx.run(
            lambda: ks.update(
                key_id,
                expected=expected,
                actor=ctx.token.name,
                detail="fields=" + ",".join(sorted(changes)),
                **changes,
            )
        )
    except KeyConflict as exc:
        raise key_refusal(ctx, exc) from None
    ctx.audited = True
    return JSON(entry, headers=_etag(entry))


@endpoint("key.rotate", "publish")
async def rotate_key(ctx: Ctx) -> Response:
    key_id = _key_id(ctx)
    req = await ctx.json(KeyRotateRequest, default=KeyRotateRequest())
    expected = ctx.if_match()
    ks = key_store(ctx)
    try:
        entry, key = await ctx.run(
            lambda: ks.rotate(
                key_id,
                grace_s=req.grace_s,
                expected=expected,
                actor=ctx.token.name,
                detail=f"grace_s={req.grace_s:g}",
            )
        )
    except KeyConflict as exc:
        raise key_refusal(ctx, exc) from None
    ctx.audited = True
    return _issued(ctx, entry, key, 200)


@endpoint("key.revoke", "publish")
async def revoke_key(ctx: Ctx) -> Response:
    key_id = _key_id(ctx)
    expected = ctx.if_match()
    ks = key_store(ctx)
    try:
        rev = await ctx.run(lambda: ks.revoke(key_id, expected=expected, actor=ctx.token.name))
    except KeyConflict as exc:
        raise key_refusal(ctx, exc) from None
    ctx.audited = True
    return JSON(KeyRevoked(id=key_id, revision=rev))
