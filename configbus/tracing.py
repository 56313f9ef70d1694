"""OpenTelemetry, configured by the standard `OTEL_*` variables, and OFF unless asked.

`tracer_provider()` returns None unless `OTEL_TRACES_EXPORTER` names an exporter
(`console`, `otlp`; `none` or unset: off). Sampling, service name and resource come from
the SDK's own variables (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`,
`OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`); the OTLP exporter reads
`OTEL_EXPORTER_OTLP_*` and needs the `otlp` extra. No global provider is installed: each
app keeps its provider in its lifespan state and hands tracers to what needs one.

Trace context crosses processes as a W3C `traceparent`: from clients to upstreams, and
from an admin's publish through the change hint to each replica's apply.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags, Tracer

from configbus.hints import parse_traceparent

EXPORTER_ENV = "OTEL_TRACES_EXPORTER"

__all__ = [
    "Tracer",
    "context_from_traceparent",
    "traceparent_of",
    "tracer_provider",
]


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ValueError(
                f"{EXPORTER_ENV}=otlp needs the OTLP exporter: pip install 'configbus[otlp]'"
            ) from None
        return OTLPSpanExporter()  # type: ignore[no-any-return]
    raise ValueError(f"{EXPORTER_ENV}: unknown exporter {name!r} (console, otlp or none)")


def tracer_provider(
    service_name: str, env: Mapping[str, str] | None = None
) -> TracerProvider | None:
    """A provider exporting to what `OTEL_TRACES_EXPORTER` names, or None (tracing off)."""
    env = os.environ if env is None else env
    names = [n.strip().lower() for n in env.get(EXPORTER_ENV, "").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not names:
        return None
    attrs = {"service.name": env.get("OTEL_SERVICE_NAME") or service_name}
    provider = TracerProvider(resource=Resource.create(attrs))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    return provider


def context_from_traceparent(value: str | bytes | None) -> Context | None:
    """The remote parent a W3C traceparent names (None if absent or malformed)."""
    if not value:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    parsed = parse_traceparent(value.strip().lower())
    if parsed is None:
        return None
    trace_id, span_id, flags = parsed
    ctx = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def traceparent_of(span: Span) -> str:
    """The W3C traceparent that makes `span` the parent of the receiver's spans."""
    c = span.get_span_context()
    return f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}"
