"""The namespace endpoints. Each handler gets a `Ctx` already authenticated and authorised;
its Redis calls go through `ctx.run` (the circuit breaker)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from starlette.responses import Response

from admin.answers import JSON, ApiError, error_from
from admin.audit import read as read_audit
from admin.backup import export as export
from admin.backup import import_ as import_
from admin.diff import changed_paths, unified
from admin.http import Ctx, endpoint, is_uint
from admin.keys import refuse_collection_hashes
from admin.merge import merge_patch
from admin.preflight import preflight
from admin.rollouts import end_by_hand
from admin.tracing import publish_span
from configbus.api import (
    MAX_VERSION,
    MAX_VERSION_DIGITS,
    MESSAGE_MAX,
    AuditQuery,
    Diff,
    DiffQuery,
    MergePatch,
    PatchQuery,
    PublishRequest,
    ReplicaRow,
    Replicas,
    ReplicaSummary,
    RollbackRequest,
    RotateRequest,
    ValidateQuery,
    ValidateResult,
    VersionPage,
    VersionsQuery,
    VersionView,
)
from configbus.codec import canonical, decode_body, to_builtins
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
    RolloutConflict,
    SecretError,
    VersionConflict,
)
from configbus.rollout import Rollout, RolloutState
from configbus.rollout_store import RolloutStore
from configbus.store import Kind, PublishResult, RecordMeta, VersionRecord
from configbus.validation import to_document

PATCH_RETRIES = 5


def masked_document(record: VersionRecord) -> tuple[Document, Any]:
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


def published(ctx: Ctx, result: PublishResult, kind: Kind) -> Response:
    ctx.svc.metrics.publishes.labels(kind, result.outcome).inc()
    # The publish script audits created and noop; an idempotent replay is audited here.
    ctx.audited = result.outcome != "idempotent"
    ctx.audit_fields.update(version=result.version, outcome_detail=result.outcome)
    path = f"/v1/namespaces/{ctx.namespace}/versions/{result.version}"
    return JSON(
        result,
        status_code=201 if result.created else 200,
        headers={"ETag": f'"{result.version}"', "Location": path},
    )


async def store_publish(
    ctx: Ctx,
    body: bytes,
    *,
    kind: Kind,
    message: str,
    expected: int | None,
    rollout: Rollout | None = None,
) -> PublishResult:
    """Publish `body` for this request: its token, Idempotency-Key and fingerprint. Traced
    (when tracing is on) as a span whose context rides the change hint to the replicas."""
    key = ctx.idempotency_key()
    with publish_span(ctx, kind) as traceparent:
        return await ctx.run(
            lambda: ctx.store.publish(
                body,
                expected_version=expected,
                idempotency_key=key,
                request_sha256=ctx.request_fingerprint(),
                author=ctx.token.name,
                message=message,
                kind=kind,
                rollout=rollout,
                traceparent=traceparent,
                sig=ctx.svc.sign(body),
            )
        )


async def head_document(ctx: Ctx) -> Document | None:
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


async def encrypt(ctx: Ctx, doc: Document) -> Document:
    """Encrypt plaintext secrets. A secret equal to the one stored at the same path keeps its
    stored ciphertext, so re-sending the same file is a no-op (and an idempotent retry)
    rather than a new version that differs only by Fernet's random IV. A ciphertext none
    of this admin's keys decrypts is refused: every replica would reject the version."""
    found = secrets_of(doc)
    plaintext = [p for p, s in found if s.secret is not None]
    sealed = [p for p, s in found if s.encrypted is not None]
    if not plaintext and not sealed:
        return doc
    box = ctx.svc.box
    if box is None:
        raise ApiError(
            422,
            "invalid_secret",
            "this admin has no CONFIGBUS_SECRET_KEYS, so it cannot store or check secrets",
            issues=[Issue(p, "no secret keys configured") for p in plaintext + sealed],
        )
    if plaintext:
        doc = encrypt_secrets(doc, box, previous=await head_document(ctx))
    bad = []
    for path, s in secrets_of(doc):
        try:
            if s.encrypted is not None:
                box.decrypt(s.encrypted, path)
        except SecretError:
            bad.append(Issue(path, "none of the admin's secret keys decrypts this secret"))
    if bad:
        raise ApiError(
            422,
            "invalid_secret",
            f"{bad[0].path}: none of the admin's secret keys decrypts this secret",
            issues=bad,
        )
    return doc


async def prepare(ctx: Ctx, data: Any) -> Document:
    """Validate, and put the stored ciphertext back where a masked secret came back unchanged."""
    doc = to_document(data)
    if any(s.masked is not None for _, s in secrets_of(doc)):
        doc = unmask_secrets(doc, await head_document(ctx))
    return doc


@endpoint("get", "read")
async def get_config(ctx: Ctx) -> Response:
    _, record = await ctx.run(lambda: ctx.store.fetch_head())
    if record is None:
        raise ApiError(404, "no_document", f"nothing published in namespace {ctx.namespace!r}")
    ctx.audit_fields["version"] = record.version
    return _version_view(ctx, record)


def _version_view(ctx: Ctx, record: VersionRecord) -> Response:
    _, masked = masked_document(record)
    return JSON(
        VersionView(**_meta_fields(record), namespace=ctx.namespace, document=masked),
        headers={"ETag": f'"{record.version}"'},
    )


def _meta_fields(record: VersionRecord) -> dict[str, Any]:
    return {f: getattr(record, f) for f in RecordMeta.__struct_fields__}


@endpoint("publish", "publish")
async def put_config(ctx: Ctx) -> Response:
    req = await ctx.json(PublishRequest)
    expected = ctx.if_match()
    doc = await prepare(ctx, req.document)
    await refuse_collection_hashes(ctx, doc)
    body = canonical(await encrypt(ctx, doc))
    result = await store_publish(ctx, body, kind="publish", message=req.message, expected=expected)
    return published(ctx, result, "publish")


@endpoint("patch", "publish")
async def patch_config(ctx: Ctx) -> Response:
    patch = await ctx.json(MergePatch)
    message = ctx.query(PatchQuery).message[:MESSAGE_MAX]
    expected = ctx.if_match()
    ctx.idempotency_key()  # a bad header is a 400 before any work
    for attempt in range(PATCH_RETRIES):
        _, record = await ctx.run(lambda: ctx.store.fetch_head())
        if record is None:
            raise ApiError(
                404,
                "no_document",
                f"nothing published in namespace {ctx.namespace!r}; PUT a document first",
            )
        stored, masked = masked_document(record)
        doc = unmask_secrets(to_document(merge_patch(masked, patch)), stored)
        await refuse_collection_hashes(ctx, doc)
        body = canonical(await encrypt(ctx, doc))
        try:
            result = await store_publish(
                ctx,
                body,
                kind="patch",
                message=message,
                expected=record.version if expected is None else expected,
            )
        except VersionConflict:
            # Without If-Match the caller asked to patch whatever is current: re-read, retry.
            if expected is not None or attempt == PATCH_RETRIES - 1:
                raise
            continue
        return published(ctx, result, "patch")
    raise AssertionError("unreachable")  # pragma: no cover


@endpoint("validate", "validate")
async def validate(ctx: Ctx) -> Response:
    probe = ctx.query(ValidateQuery).probe
    req = await ctx.json(PublishRequest)
    doc = await prepare(ctx, req.document)
    if probe:
        issues = await preflight(doc, await head_document(ctx), ctx.svc.box, label="probe")
        if issues:
            raise ApiError(
                422, "probe_failed", "a changed provider did not answer its probe", issues=issues
            )
    return JSON(ValidateResult(valid=True, issues=[], secrets=[p for p, _ in secrets_of(doc)]))


@endpoint("versions", "read")
async def list_versions(ctx: Ctx) -> Response:
    q = ctx.query(VersionsQuery)
    metas = await ctx.run(lambda: ctx.store.versions(limit=q.limit, before=q.before))
    nxt = metas[-1].version if len(metas) == q.limit else None
    return JSON(VersionPage(versions=metas, next_before=nxt))


def _version_param(ctx: Ctx) -> int:
    raw = ctx.request.path_params.get("n", "")
    if not is_uint(raw) or len(raw) > MAX_VERSION_DIGITS or not 1 <= int(raw) <= MAX_VERSION:
        raise ApiError(400, "bad_request", "version must be a positive integer")
    return int(raw)


@endpoint("version", "read")
async def get_version(ctx: Ctx) -> Response:
    n = _version_param(ctx)
    record = await ctx.run(lambda: ctx.store.get(n))
    ctx.audit_fields["version"] = n
    return _version_view(ctx, record)


@endpoint("diff", "read")
async def diff(ctx: Ctx) -> Response:
    q = ctx.query(DiffQuery)
    a, b = q.from_, q.to
    ra = await ctx.run(lambda: ctx.store.get(a))
    rb = await ctx.run(lambda: ctx.store.get(b))
    _, da = masked_document(ra)
    _, db = masked_document(rb)
    ctx.audit_fields.update({"from": a, "to": b})
    return JSON(
        Diff(
            from_=a,
            to=b,
            unified=unified(da, db, from_name=f"version {a}", to_name=f"version {b}"),
            changes=changed_paths(da, db),
        )
    )


@endpoint("rollback", "rollback")
async def rollback(ctx: Ctx) -> Response:
    req = await ctx.json(RollbackRequest)
    expected, key = ctx.if_match(), ctx.idempotency_key()
    ctx.audit_fields["to_version"] = req.to_version
    source = await ctx.run(lambda: ctx.store.get(req.to_version))
    await refuse_collection_hashes(ctx, _check_replicas_accept(ctx, source))
    await _abort_rollout_for(ctx, req, expected)
    result = await ctx.run(
        lambda: ctx.store.rollback(
            req.to_version,
            expected_version=expected,
            idempotency_key=key,
            author=ctx.token.name,
            message=req.message,
            sig=ctx.svc.sign(source.body),  # checked just now by today's rules
        )
    )
    return published(ctx, result, "rollback")


async def _abort_rollout_for(ctx: Ctx, req: RollbackRequest, expected: int | None) -> None:
    """A rollback during a rollout aborts the rollout first (audited), so its replicas fall
    back with everyone else. A stale If-Match refuses the rollback before anything moves."""
    rs = RolloutStore(ctx.store)
    rollout = await ctx.run(rs.get)
    if rollout is None or not rollout.running:
        return
    if expected is not None:
        head = await ctx.run(lambda: ctx.store.head())
        if head.version != expected:
            raise error_from(VersionConflict(expected, head.version), ctx.svc.breaker)
    why = f"rollback to version {req.to_version}" + (f": {req.message}" if req.message else "")
    try:
        done = await ctx.run(
            lambda: end_by_hand(
                rs,
                rollout,
                RolloutState.ABORTED,
                actor=ctx.token.name,
                message=why,
                tracer=ctx.svc.tracer,
                traceparent=ctx.request.headers.get("traceparent"),
            )
        )
    except RolloutConflict:
        return  # it ended meanwhile (the guard was quicker): nothing left to abort
    ctx.svc.metrics.rollouts.labels("aborted").inc()
    await ctx.run(
        lambda: ctx.store.audit(
            "rollout_abort",
            ctx.token.name,
            "ok",
            version=done.version,
            rollout=done.id,
            stage=done.stage + 1,
            message=done.reason,
        )
    )


def _check_replicas_accept(ctx: Ctx, record: VersionRecord) -> Document:
    """Refuse to republish a body the replicas would reject: one that fails today's checks,
    or whose secrets none of the current keys decrypt (a key dropped since)."""
    try:
        record.verify()
        doc = decode_body(record.body)
        if ctx.svc.box is not None:
            decrypt_secrets(doc, ctx.svc.box)
        return doc
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
            ReplicaRow(
                replica_id=st.replica_id,
                state=st.state,
                version=st.version,
                epoch=st.epoch,
                sha256=st.sha256,
                applied_at=st.applied_at,
                stale=st.stale,
                rejected_version=st.rejected_version,
                reason=st.reason,
                last_seen=info.last_seen,
                alive=info.alive,
                on_head=(st.epoch, st.version, st.sha256)
                == (head.epoch, head.version, head.sha256),
                labels=dict(st.labels),
                staged=st.staged,
                propagation_s=st.propagation_s,
                keys_rev=st.keys_rev,
                keys_epoch=st.keys_epoch,
            )
        )
    alive = [r for r in rows if r.alive]
    timed = [r for r in alive if r.on_head and r.propagation_s is not None]
    slowest = max(timed, key=lambda r: r.propagation_s or 0.0) if timed else None
    summary = ReplicaSummary(
        head=head.version,
        epoch=head.epoch,
        total=len(rows),
        alive=len(alive),
        dead=len(rows) - len(alive),
        rejected=sum(1 for r in alive if r.rejected_version is not None or r.state == "rejected"),
        per_version={str(v): c for v, c in sorted(per_version.items())},
        all_on_head=bool(alive) and all(r.on_head for r in alive),
        damage=head.damage,
        slowest_replica=slowest.replica_id if slowest else None,
        slowest_propagation_s=slowest.propagation_s if slowest else None,
    )
    return JSON(Replicas(summary=summary, replicas=rows))


@endpoint("audit", "read")
async def audit(ctx: Ctx) -> Response:
    q = ctx.query(AuditQuery)
    return JSON(await ctx.run(lambda: read_audit(ctx.store, q)))


@endpoint("rotate", "rotate")
async def rotate(ctx: Ctx) -> Response:
    req = await ctx.json(RotateRequest, default=RotateRequest())
    box = ctx.svc.box
    if box is None:
        raise ApiError(409, "no_secret_keys", "this admin has no CONFIGBUS_SECRET_KEYS")
    _, record = await ctx.run(lambda: ctx.store.fetch_head())
    if record is None:
        raise ApiError(404, "no_document", f"nothing published in namespace {ctx.namespace!r}")
    stored, _ = masked_document(record)
    body = canonical(reencrypt_secrets(stored, box))
    result = await ctx.run(
        lambda: ctx.store.publish(
            body,
            expected_version=record.version,
            author=ctx.token.name,
            message=req.message or "re-encrypt secrets with the newest key",
            kind="rotate",
            sig=ctx.svc.sign(body),
        )
    )
    return published(ctx, result, "rotate")
