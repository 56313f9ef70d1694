"""The admin's spans: a publish and a rollout step, parented by the caller's `traceparent`
when it sent one. Each yields the traceparent its change hint carries, so the replicas'
applies of that change join the trace."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from configbus.rollout import Rollout
from configbus.tracing import context_from_traceparent, traceparent_of

if TYPE_CHECKING:
    from admin.http import Ctx


def publish_span(ctx: Ctx, kind: str) -> contextlib.AbstractContextManager[str | None]:
    """A span around one publish."""
    return change_span(
        ctx.svc.tracer,
        f"configbus.{kind}",
        ctx.request.headers.get("traceparent"),
        {"configbus.namespace": ctx.namespace, "configbus.kind": kind,
         "configbus.author": ctx.token.name},
    )  # fmt: skip


def step_span(
    tracer: Tracer | None,
    namespace: str,
    rollout: Rollout,
    action: str,
    actor: str,
    parent: str | None = None,
) -> contextlib.AbstractContextManager[str | None]:
    """A span around one rollout step (the driver's, or a person's promote or abort)."""
    return change_span(
        tracer,
        f"configbus.rollout_{action}",
        parent,
        {"configbus.namespace": namespace, "configbus.kind": f"rollout_{action}",
         "configbus.author": actor, "configbus.rollout_id": rollout.id,
         "configbus.config_version": rollout.version, "configbus.rollout_stage": rollout.stage},
    )  # fmt: skip


@contextlib.contextmanager
def change_span(
    tracer: Tracer | None, name: str, parent: str | None, attributes: dict[str, str | int]
) -> Iterator[str | None]:
    if tracer is None:
        yield None
        return
    span = tracer.start_span(
        name,
        context=context_from_traceparent(parent),
        kind=SpanKind.SERVER if parent is not None else SpanKind.INTERNAL,
        attributes=attributes,
    )
    try:
        yield traceparent_of(span)
    except BaseException as exc:
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()
