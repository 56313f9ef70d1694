"""Export and import: a namespace's retained versions out, and an empty namespace re-seeded
from them."""

from __future__ import annotations

from starlette.responses import Response

from admin.answers import JSON, ApiError
from admin.http import Ctx, endpoint
from configbus.api import MAX_VERSION, ImportResult
from configbus.codec import decode_body, sha256_hex
from configbus.errors import InvalidDocument, NamespaceNotEmpty
from configbus.store import Export


def _check_numbers(data: Export) -> None:
    """Every number before anything is written: the import script cannot stop half way,
    and a version past 2**53 is not a number Lua, JSON or a replica holds exactly."""
    if not 1 <= data.head <= MAX_VERSION:
        raise ApiError(422, "invalid_export", f"head {data.head} is not a version (1 to 2**53)")
    seen: set[int] = set()
    for i, r in enumerate(data.records):
        where = f"records[{i}]"
        if not 1 <= r.version <= MAX_VERSION:
            raise ApiError(422, "invalid_export", f"{where}: version {r.version} is not 1 to 2**53")
        if not 0 <= r.parent <= MAX_VERSION:
            raise ApiError(422, "invalid_export", f"{where}: parent {r.parent} is not 0 to 2**53")
        if r.source is not None and not 1 <= r.source <= MAX_VERSION:
            raise ApiError(422, "invalid_export", f"{where}: source {r.source} is not 1 to 2**53")
        if r.version in seen:
            raise ApiError(422, "invalid_export", f"{where}: version {r.version} appears twice")
        seen.add(r.version)
        if sha256_hex(r.body) != r.sha256:
            raise ApiError(
                422, "invalid_export", f"version {r.version}: body does not match its sha256"
            )


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
    _check_numbers(data)
    if data.head not in {r.version for r in data.records}:
        raise ApiError(
            422, "invalid_export", f"head version {data.head} is missing from the export"
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
    if current.version or current.damage:
        raise ApiError(
            409,
            "not_empty",
            f"namespace {ctx.namespace!r} already has "
            + (f"version {current.version}" if current.version else "a (damaged) head")
            + "; import only re-seeds an empty store",
            current_version=current.version,
        )
    try:
        head = await ctx.run(lambda: ctx.store.import_(data, actor=ctx.token.name))
    except NamespaceNotEmpty as exc:  # someone published between the check and the import
        raise ApiError(409, "not_empty", str(exc)) from None
    ctx.audited = True  # the import script audits a successful import
    return JSON(ImportResult(head=head, versions=len(data.records)), status_code=201)
