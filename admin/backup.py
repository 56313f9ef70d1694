"""Export and import: a namespace's retained versions out, and an empty namespace re-seeded
from them."""

from __future__ import annotations

from starlette.responses import Response

from admin.http import JSON, ApiError, Ctx, endpoint
from configbus.api import ImportResult
from configbus.codec import decode_body, sha256_hex
from configbus.errors import InvalidDocument, NamespaceNotEmpty
from configbus.store import Export


@endpoint("export", "read")
async def export(ctx: Ctx) -> Response:
    data = await ctx.run(lambda: ctx.store.export())
    ctx.audit_fields.update(head=data.head, versions=len(data.records))
    return JSON(data)


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
    return JSON(ImportResult(head=head, versions=len(data.records)), status_code=201)
