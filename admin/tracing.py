"""The admin's spans: a publish, parented by the caller's `traceparent` when it sent one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from opentelemetry.trace import SpanKind, Status, StatusCode

from configbus.tracing import context_from_traceparent, traceparent_of

if TYPE_CHECKING:
    from admin.http import Ctx


@contextlib.contextmanager
def publish_span(ctx: Ctx, kind: str) -> Iterator[str | None]:
    """A span around one publish; yields the traceparent the change hint carries."""
    tracer = ctx.svc.tracer
    if tracer is None:
        yield None
        return
    span = tracer.start_span(
        f"configbus.{kind}",
        context=context_from_traceparent(ctx.request.headers.get("traceparent")),
        kind=SpanKind.SERVER,
        attributes={
            "configbus.namespace": ctx.namespace,
            "configbus.kind": kind,
            "configbus.author": ctx.token.name,
        },
    )
    try:
        yield traceparent_of(span)
    except BaseException as exc:
        span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        span.end()
