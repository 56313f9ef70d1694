"""The rollout endpoints: start one (a version for stages of replicas first), see it with
the guard's live view, promote or abort it by hand. The driver (admin/rollouts.py) moves it
on its own; these share its steps, so a person and the guard can never both promote."""

from __future__ import annotations

import secrets
import time

from starlette.responses import Response

from admin.answers import JSON, ApiError
from admin.http import Ctx, endpoint
from admin.merge import merge_patch
from admin.preflight import preflight
from admin.rollouts import activate, assess, end_by_hand, snapshot
from admin.routes import (
    encrypt,
    head_document,
    masked_document,
    prepare,
    published,
    store_publish,
)
from configbus.api import RolloutAction, RolloutRequest, RolloutView
from configbus.codec import canonical
from configbus.crypto import unmask_secrets
from configbus.document import Document
from configbus.errors import Issue
from configbus.rollout import Rollout, RolloutState, Stage, parse_selector, share_members
from configbus.rollout_store import RolloutStore
from configbus.validation import to_document


def _stages(req: RolloutRequest) -> tuple[Stage, ...]:
    stages, issues = [], []
    for i, s in enumerate(req.stages):
        try:
            stages.append(Stage(selector=parse_selector(s.selector), bake_s=s.bake_s))
        except ValueError as exc:
            issues.append(Issue(f"stages[{i}].selector", str(exc)))
    if issues:
        raise ApiError(422, "invalid_rollout", "the rollout's stages are not valid", issues=issues)
    return tuple(stages)


async def _document(ctx: Ctx, req: RolloutRequest) -> Document:
    if (req.document is None) == (req.patch is None):
        raise ApiError(
            422,
            "invalid_rollout",
            "give exactly one of 'document' and 'patch'",
            issues=[Issue("", "exactly one of 'document' and 'patch'")],
        )
    if req.document is not None:
        return await encrypt(ctx, await prepare(ctx, req.document))
    _, record = await ctx.run(lambda: ctx.store.fetch_head())
    if record is None:
        raise ApiError(404, "no_document", f"nothing published in namespace {ctx.namespace!r}")
    stored, masked = masked_document(record)
    assert req.patch is not None
    doc = unmask_secrets(to_document(merge_patch(masked, req.patch)), stored)
    return await encrypt(ctx, doc)


@endpoint("rollout_start", "publish")
async def start_rollout(ctx: Ctx) -> Response:
    req = await ctx.json(RolloutRequest)
    stages = _stages(req)
    expected = ctx.if_match()
    ctx.idempotency_key()  # a bad header is a 400 before any work
    doc = await _document(ctx, req)
    if req.preflight:
        issues = await preflight(doc, await head_document(ctx), ctx.svc.box)
        if issues:
            raise ApiError(
                422, "preflight_failed", "a changed provider failed its preflight", issues=issues
            )
    body = canonical(doc)
    now = time.time()
    members: tuple[str, ...] = ()
    if stages[0].selector.share is not None:
        live = [i.status.replica_id for i in await ctx.run(lambda: ctx.store.replicas()) if i.alive]
        members = share_members(stages[0], live)
    rollout = Rollout(
        id="ro-" + secrets.token_hex(6),
        version=0,
        sha256="",
        epoch="",
        base=0,
        stages=stages,
        guard=req.guard,
        members=members,
        author=ctx.token.name,
        message=req.message,
        started_at=now,
        stage_started_at=now,
    )
    # In the drivers' index before the rollout exists, and again after (a driver that looked
    # in between dropped it): an admin dying right after the write leaves no rollout undriven.
    await ctx.run(lambda: activate(ctx.store))
    result = await store_publish(
        ctx, body, kind="rollout", message=req.message, expected=expected, rollout=rollout
    )
    if result.created:
        await ctx.run(lambda: activate(ctx.store))
        ctx.svc.metrics.rollouts.labels("started").inc()
    ctx.audit_fields["rollout"] = rollout.id
    return published(ctx, result, "rollout")


async def _view(ctx: Ctx) -> tuple[RolloutStore, Rollout]:
    rs = RolloutStore(ctx.store)
    rollout = await ctx.run(rs.get)
    if rollout is None:
        raise ApiError(404, "no_rollout", f"no rollout in namespace {ctx.namespace!r}")
    ctx.audit_fields.update(rollout=rollout.id, version=rollout.version)
    return rs, rollout


@endpoint("rollout", "read")
async def get_rollout(ctx: Ctx) -> Response:
    rs, rollout = await _view(ctx)
    if not rollout.running:
        return JSON(RolloutView(rollout=rollout))
    replicas = await ctx.run(lambda: ctx.store.replicas())
    zero = await ctx.run(lambda: rs.load_baseline(rollout.id, rollout.stage))
    a = assess(rollout, replicas, zero or snapshot(replicas), time.time())
    return JSON(RolloutView(rollout=rollout, assessment=a))


async def _end(ctx: Ctx, state: RolloutState) -> Response:
    rs, rollout = await _view(ctx)
    req = await ctx.json(RolloutAction, default=RolloutAction())
    done = await ctx.run(
        lambda: end_by_hand(
            rs,
            rollout,
            state,
            actor=ctx.token.name,
            message=req.message,
            tracer=ctx.svc.tracer,
            traceparent=ctx.request.headers.get("traceparent"),
        )
    )
    ctx.svc.metrics.rollouts.labels(done.state.value).inc()
    ctx.audit_fields["message"] = done.reason
    return JSON(RolloutView(rollout=done))


@endpoint("rollout_promote", "steer")
async def promote_rollout(ctx: Ctx) -> Response:
    return await _end(ctx, RolloutState.PROMOTED)


@endpoint("rollout_abort", "steer")
async def abort_rollout(ctx: Ctx) -> Response:
    return await _end(ctx, RolloutState.ABORTED)
