"""`GET /v1/namespaces/{ns}/usage`: requests, tokens and cost the replicas counted, summed
over a time range, filtered by key, model, provider or team, grouped by any of them and,
with `bucket`, per minute, hour or day."""

from __future__ import annotations

import time

from starlette.responses import Response

from admin.answers import JSON, ApiError
from admin.http import Ctx, endpoint
from configbus.api import UsageQuery
from configbus.usage import UsageReader, check_query

DEFAULT_RANGE_S = 86_400


@endpoint("usage", "read")
async def usage(ctx: Ctx) -> Response:
    q = ctx.query(UsageQuery)
    end = q.to if q.to is not None else int(time.time())
    start = q.from_ if q.from_ is not None else end - DEFAULT_RANGE_S
    try:
        groups = check_query(start, end, q.group_by.split(",") if q.group_by else (), q.bucket)
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    reader = UsageReader(ctx.svc.redis, ctx.namespace)
    filters = {"key": q.key, "model": q.model, "provider": q.provider, "team": q.team}
    return JSON(
        await ctx.run(
            lambda: reader.query(
                start=start, end=end, filters=filters, group_by=groups, bucket=q.bucket
            )
        )
    )
