"""Provider discovery and tests: ask a provider of the published document, with its stored
key, for its model list (`GET .../providers/{name}/models`) or just whether it answers
(`POST .../providers/{name}/test`). Both need the `validate` permission: they use the key."""

from __future__ import annotations

from starlette.responses import Response

from admin.answers import JSON, ApiError
from admin.http import Ctx, endpoint
from admin.probe import ask, client, model_ids
from admin.routes import head_document
from configbus.api import ProviderModels, ProviderTest
from configbus.document import Provider


async def _provider(ctx: Ctx) -> tuple[int, Provider]:
    name = ctx.request.path_params.get("name", "")
    ctx.audit_fields["provider"] = name[:128]
    doc = await head_document(ctx)
    if doc is None:
        raise ApiError(404, "no_document", f"nothing published in namespace {ctx.namespace!r}")
    for i, p in enumerate(doc.providers):
        if p.name == name:
            return i, p
    raise ApiError(404, "unknown_provider", f"head has no provider named {name[:128]!r}")


async def _ask(ctx: Ctx) -> tuple[ProviderTest, object]:
    i, p = await _provider(ctx)
    async with client() as http:
        return await ask(http, p, ctx.svc.box, f"providers[{i}]")


@endpoint("provider_test", "validate")
async def provider_test(ctx: Ctx) -> Response:
    test, _ = await _ask(ctx)
    ctx.audit_fields.update(ok=test.ok, upstream_status=test.status)
    return JSON(test)


@endpoint("provider_models", "validate")
async def provider_models(ctx: Ctx) -> Response:
    test, body = await _ask(ctx)
    if not test.ok:
        why = f"answered {test.status}" if test.status is not None else "did not answer"
        raise ApiError(
            502, "provider_failed", f"provider {test.provider!r} at {test.url} {why}: {test.error}"
        )
    models = model_ids(body)
    if models is None:
        raise ApiError(
            502, "provider_failed", f"provider {test.provider!r}: the answer has no model list"
        )
    return JSON(ProviderModels(provider=test.provider, models=models, latency_ms=test.latency_ms))
