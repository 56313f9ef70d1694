"""The namespace endpoints. Each handler gets a `Ctx` already authenticated and authorised;
its Redis calls go through `ctx.run` (the circuit breaker)."""

from __future__ import annotations

from collections import Counter
from functools import partial
from typing import Annotated, Any

import msgspec
from msgspec import Meta
from starlette.responses import Response

from admin.diff import changed_paths, unified
from admin.http import JSON, ApiError, Ctx, endpoint, is_uint
from admin.merge import merge_patch
from configbus.codec import canonical, decode_body, sha256_hex, to_builtins
from configbus.crypto import (
    decrypt_secrets,
    encrypt_secrets,
    mask_secrets,
    reencrypt_secrets,
    secrets_of,
    unmask_secrets,
)
from configbus.document import Document
from configbus.errors import (
    CorruptRecord,
    InvalidDocument,
    Issue,
    NamespaceNotEmpty,
    SecretError,
    VersionConflict,
)
from configbus.store import Export, Kind, PublishResult, RecordMeta, VersionRecord
from configbus.validation import to_document

Message = Annotated[str, Meta(max_length=1000)]
PATCH_RETRIES = 5


class PublishRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    document: dict[str, Any]
    message: Message = ""


class RollbackRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    to_version: Annotated[int, Meta(ge=1)]
    message: Message = ""


class RotateRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    message: Message = ""


def _meta(m: RecordMeta) -> dict[str, Any]:
    return msgspec.to_builtins(m)  # type: ignore[no-any-return]


def _masked(record: VersionRecord) -> tuple[Document, Any]:
    """The stored document and its masked builtins (what people see)."""
    record.verify()
    try:
        stored = decode_body(record.body)
    except InvalidDocument as exc:  # stored by something that bypassed validation
        raise CorruptRecord(
            f"version {record.version}: stored document is invalid: {exc}",
            epoch=record.epoch,
            version=record.version,
        ) from None
    return stored, to_builtins(mask_secrets(stored))


def _published(ctx: Ctx, result: PublishResult, kind: Kind) -> Response:
    ctx.svc.metrics.publishes.labels(kind, result.outcome).inc()
    # The publish script audits created and noop; an idempotent replay is audited here.
    ctx.audited = result.outcome != "idempotent"
    ctx.audit_fields.update(version=result.version, outcome_detail=result.outcome)
    path = f"/v1/namespaces/{ctx.namespace}/versions/{result.version}"
    return JSON(
        {
            "version": result.version,
            "epoch": result.epoch,
            "sha256": result.sha256,
            "outcome": result.outcome,
        },
        status_code=201 if result.created else 200,
        headers={"ETag": f'"{result.version}"', "Location": path},
    )


async def _head_document(ctx: Ctx) -> Document | None:
    """The head's stored document, or None when there is none or it cannot be trusted. A
    corrupt or invalid head (written by something that bypassed the admin) must not stop an
    admin from publishing the fix: its secrets are simply not reused."""
    try:
        _, record = await ctx.run(lambda: ctx.store.fetch_head())
    except CorruptRecord:
        return None
    if record is None:
        return None
    try:
        record.verify()
        return decode_body(record.body)
    except (CorruptRecord, InvalidDocument):
        return None


async def _encrypt(ctx: Ctx, doc: Document) -> Document:
    """Encrypt plaintext secrets. A secret equal to the one stored at the same path keeps its
    stored ciphertext, so re-sending the same file is a no-op (and an idempotent retry)
    rather than a new version that differs only by Fernet's random IV."""
    plaintext = [p for p, s in secrets_of(doc) if s.secret is not None]
    if not plaintext:
        return doc
    box = ctx.svc.box
    if box is None:
        raise ApiError(
            422,
            "invalid_secret",
            "this admin has no CONFIGBUS_SECRET_KEYS, so it cannot store secrets",
            issues=[Issue(p, "cannot encrypt: no secret keys configured") for p in plaintext],
        )
    return encrypt_secrets(doc, box, previous=await _head_document(ctx))


async def _prepare(ctx: Ctx, data: Any) -> Document:
    """Validate, and put the stored ciphertext back where a masked secret came back unchanged."""
    doc = to_document(data)
    if any(s.masked is not None for _, s in secrets_of(doc)):
        doc = unmask_secrets(doc, await _head_document(ctx))
    return doc


@endpoint("get", "read")
async def get_config(ctx: Ctx) -> Response:
    _, record = await ctx.run(lambda: ctx.store.fetch_head())
    if record is None:
        raise ApiError(404, "no_document", f"nothing published in namespace {ctx.namespace!r}")
    _, masked = _masked(record)
    ctx.audit_fields["version"] = record.version
    return JSON(
        {"namespace": ctx.namespace, **_meta(record.meta), "document": masked},
        headers={"ETag": f'"{record.version}"'},
    )


@endpoint("publish", "publish")
async def put_config(ctx: Ctx) -> Response:
    req = await ctx.json(PublishRequest)
    expected, key = ctx.if_match(), ctx.idempotency_key()
    body = canonical(await _encrypt(ctx, await _prepare(ctx, req.document)))
    result = await ctx.run(
        lambda: ctx.store.publish(
            body,
            expected_version=expected,
            idempotency_key=key,
            request_sha256=ctx.request_fingerprint(),
            author=ctx.token.name,
            message=req.message,
            kind="publish",
        )
    )
    return _published(ctx, result, "publish")


@endpoint("patch", "publish")
async def patch_config(ctx: Ctx) -> Response:
    patch = await ctx.json(dict[str, Any])
    message = ctx.request.query_params.get("message", "")[:1000]
    expected, key = ctx.if_match(), ctx.idempotency_key()
    for attempt in range(PATCH_RETRIES):
        _, record = await ctx.run(lambda: ctx.store.fetch_head())
        if record is None:
            raise ApiError(
                404,
                "no_document",
                f"nothing published in namespace {ctx.namespace!r}; PUT a document first",
            )
        stored, masked = _masked(record)
        doc = unmask_secrets(to_document(merge_patch(masked, patch)), stored)
        body = canonical(await _encrypt(ctx, doc))
        try:
            result = await ctx.run(
                partial(
                    ctx.store.publish,
                    body,
                    expected_version=record.version if expected is None else expected,
                    idempotency_key=key,
                    request_sha256=ctx.request_fingerprint(),
                    author=ctx.token.name,
                    message=message,
                    kind="patch",
                )
            )
        except VersionConflict:
            # Without If-Match the caller asked to patch whatever is current: re-read, retry.
            if expected is not None or attempt == PATCH_RETRIES - 1:
                raise
            continue
        return _published(ctx, result, "patch")
    raise AssertionError("unreachable")  # pragma: no cover


@endpoint("validate", "validate")
async def validate(ctx: Ctx) -> Response:
    req = await ctx.json(PublishRequest)
    doc = await _prepare(ctx, req.document)
    return JSON({"valid": True, "issues": [], "secrets": [p for p, _ in secrets_of(doc)]})


@endpoint("versions", "read")
async def list_versions(ctx: Ctx) -> Response:
    limit = ctx.query_int("limit", default=50, lo=1, hi=500) or 50
    before = ctx.query_int("before", default=None, lo=1, hi=2**53)
    metas = await ctx.run(lambda: ctx.store.versions(limit=limit, before=before))
    nxt = metas[-1].version if len(metas) == limit else None
    return JSON({"versions": [_meta(m) for m in metas], "next_before": nxt})


def _version_param(ctx: Ctx) -> int:
    raw = ctx.request.path_params.get("n", "")
    if not is_uint(raw) or len(raw) > 18 or not 1 <= int(raw) <= 2**53:
        raise ApiError(400, "bad_request", "version must be a positive integer")
    return int(raw)


@endpoint("version", "read")
async def get_version(ctx: Ctx) -> Response:
    n = _version_param(ctx)
    record = await ctx.run(lambda: ctx.store.get(n))
    _, masked = _masked(record)
    ctx.audit_fields["version"] = n
    return JSON(
        {"namespace": ctx.namespace, **_meta(record.meta), "document": masked},
        headers={"ETag": f'"{n}"'},
    )


@endpoint("diff", "read")
async def diff(ctx: Ctx) -> Response:
    a = ctx.query_int("from", default=None, lo=1, hi=2**53)
    b = ctx.query_int("to", default=None, lo=1, hi=2**53)
    assert a is not None and b is not None
    ra = await ctx.run(lambda: ctx.store.get(a))
    rb = await ctx.run(lambda: ctx.store.get(b))
    _, da = _masked(ra)
    _, db = _masked(rb)
    ctx.audit_fields.update({"from": a, "to": b})
    return JSON(
        {
            "from": a,
            "to": b,
            "unified": unified(da, db, from_name=f"version {a}", to_name=f"version {b}"),
            "changes": [msgspec.to_builtins(c) for c in changed_paths(da, db)],
        }
    )


@endpoint("rollback", "rollback")
async def rollback(ctx: Ctx) -> Response:
    req = await ctx.json(RollbackRequest)
    expected, key = ctx.if_match(), ctx.idempotency_key()
    ctx.audit_fields["to_version"] = req.to_version
    source = await ctx.run(lambda: ctx.store.get(req.to_version))
    _check_replicas_accept(ctx, source)
    result = await ctx.run(
        lambda: ctx.store.rollback(
            req.to_version,
            expected_version=expected,
            idempotency_key=key,
            author=ctx.token.name,
            message=req.message,
        )
    )
    return _published(ctx, result, "rollback")


def _check_replicas_accept(ctx: Ctx, record: VersionRecord) -> None:
    """Refuse to republish a body the replicas would reject: one that fails today's checks,
    or whose secrets none of the current keys decrypt (a key dropped since)."""
    try:
        record.verify()
        doc = decode_body(record.body)
        if ctx.svc.box is not None:
            decrypt_secrets(doc, ctx.svc.box)
    except (InvalidDocument, SecretError, CorruptRecord) as exc:
        issues = exc.issues if isinstance(exc, InvalidDocument) else [Issue("", str(exc))]
        raise ApiError(
            422,
            "invalid_document",
            f"version {record.version} would be rejected by the replicas: {exc}",
            issues=issues,
        ) from None


@endpoint("replicas", "read")
async def replicas(ctx: Ctx) -> Response:
    head = await ctx.run(lambda: ctx.store.head())
    infos = await ctx.run(lambda: ctx.store.replicas())
    rows = []
    per_version: Counter[int] = Counter()
    for info in infos:
        st = info.status
        if info.alive:
            per_version[st.version] += 1
        rows.append(
            {
                "replica_id": st.replica_id,
                "state": st.state,
                "version": st.version,
                "epoch": st.epoch,
                "sha256": st.sha256,
                "applied_at": st.applied_at,
                "stale": st.stale,
                "rejected_version": st.rejected_version,
                "reason": st.reason,
                "last_seen": info.last_seen,
                "alive": info.alive,
                "on_head": (st.epoch, st.version, st.sha256)
                == (head.epoch, head.version, head.sha256),
            }
        )
    alive = [r for r in rows if r["alive"]]
    summary = {
        "head": head.version,
        "epoch": head.epoch,
        "total": len(rows),
        "alive": len(alive),
        "dead": len(rows) - len(alive),
        "rejected": sum(
            1 for r in alive if r["rejected_version"] is not None or r["state"] == "rejected"
        ),
        "per_version": {str(v): c for v, c in sorted(per_version.items())},
        "all_on_head": bool(alive) and all(r["on_head"] for r in alive),
    }
    return JSON({"summary": summary, "replicas": rows})


@endpoint("audit", "read")
async def audit(ctx: Ctx) -> Response:
    count = ctx.query_int("count", default=100, lo=1, hi=1000) or 100
    before = ctx.request.query_params.get("before") or None
    if before is not None and not _stream_id(before):
        raise ApiError(400, "bad_request", "'before' must be an audit entry id like 1700-0")
    if before is not None and not before.strip("0-"):
        return JSON({"entries": [], "next_before": None})  # nothing is older than 0-0
    entries = await ctx.run(lambda: ctx.store.audit_entries(count=count, before=before))
    nxt = entries[-1].id if len(entries) == count else None
    return JSON({"entries": [msgspec.to_builtins(e) for e in entries], "next_before": nxt})


def _stream_id(value: str) -> bool:
    ms, _, seq = value.partition("-")
    return is_uint(ms) and len(ms) <= 19 and (seq == "" or (is_uint(seq) and len(seq) <= 19))


@endpoint("export", "read")
async def export(ctx: Ctx) -> Response:
    data = await ctx.run(lambda: ctx.store.export())
    ctx.audit_fields.update(head=data.head, versions=len(data.records))
    return JSON(msgspec.to_builtins(data))


@endpoint("import", "import")
async def import_(ctx: Ctx) -> Response:
    data = await ctx.json(Export, ctx.svc.settings.max_import_bytes)
    if data.head == 0 or not data.records or data.epoch is None:
        raise ApiError(422, "invalid_export", "the export holds no versions")
    if data.head not in {r.version for r in data.records}:
        raise ApiError(
            422, "invalid_export", f"head version {data.head} is missing from the export"
        )
    for r in data.records:
        if r.version < 1:
            raise ApiError(422, "invalid_export", f"version {r.version} is not positive")
        if sha256_hex(r.body) != r.sha256:
            raise ApiError(
                422, "invalid_export", f"version {r.version}: body does not match its sha256"
            )
    head_record = next(r for r in data.records if r.version == data.head)
    try:
        decode_body(head_record.body)  # replicas would refuse a head that fails the checks
    except InvalidDocument as exc:
        raise ApiError(
            422,
            "invalid_export",
            f"head version {data.head} is not a valid document",
            issues=exc.issues,
        ) from None
    current = await ctx.run(lambda: ctx.store.head())
    if current.version:
        raise ApiError(
            409,
            "not_empty",
            f"namespace {ctx.namespace!r} already has version "
            f"{current.version}; import only re-seeds an empty store",
            current_version=current.version,
        )
    try:
        head = await ctx.run(lambda: ctx.store.import_(data, actor=ctx.token.name))
    except NamespaceNotEmpty as exc:  # someone published between the check and the import
        raise ApiError(409, "not_empty", str(exc)) from None
    ctx.audited = True  # the import script audits a successful import
    return JSON({"head": head, "versions": len(data.records)}, status_code=201)


@endpoint("rotate", "rotate")
async def rotate(ctx: Ctx) -> Response:
    req = await ctx.json(RotateRequest, default=RotateRequest())
    box = ctx.svc.box
    if box is None:
        raise ApiError(409, "no_secret_keys", "this admin has no CONFIGBUS_SECRET_KEYS")
    _, record = await ctx.run(lambda: ctx.store.fetch_head())
    if record is None:
        raise ApiError(404, "no_document", f"nothing published in namespace {ctx.namespace!r}")
    stored, _ = _masked(record)
    body = canonical(reencrypt_secrets(stored, box))
    result = await ctx.run(
        lambda: ctx.store.publish(
            body,
            expected_version=record.version,
            author=ctx.token.name,
            message=req.message or "re-encrypt secrets with the newest key",
            kind="rotate",
        )
    )
    return _published(ctx, result, "rotate")
