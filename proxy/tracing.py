"""A chat request as a trace: one server span, a client span per upstream attempt.

Built only when tracing is on; the handler holds None otherwise and pays one `is None`
test per hook. Attributes name the model, the provider and deployment of each attempt, its
outcome, the config version, the client by its name (never its key) and limit decisions.
"""

from __future__ import annotations

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from configbus.tracing import context_from_traceparent, traceparent_of


class RequestTrace:
    __slots__ = ("_attempt", "_tracer", "root")

    def __init__(self, tracer: Tracer, traceparent: bytes | None, version: int, rid: bytes) -> None:
        self._tracer = tracer
        self.root: Span = tracer.start_span(
            "chat.completions",
            context=context_from_traceparent(traceparent),
            kind=SpanKind.SERVER,
            attributes={
                "configbus.config_version": version,
                "configbus.request_id": rid.decode("latin-1"),
            },
        )
        self._attempt: Span | None = None

    def trace_id(self) -> str:
        return f"{self.root.get_span_context().trace_id:032x}"

    def identify(self, client: str, model: str) -> None:
        self.root.set_attribute("configbus.client", client)
        self.root.set_attribute("gen_ai.request.model", model)

    def limit(self, decision: str, provider: str = "") -> None:
        """A limit decision: `admitted`, `refused`, `shadow` (would have refused)."""
        attrs = {"configbus.limit.decision": decision}
        if provider:
            attrs["configbus.provider"] = provider
        self.root.add_event("limit", attrs)

    def attempt(self, provider: str, deployment: str, n: int) -> dict[str, str]:
        """Start an attempt's span; the headers that carry it upstream."""
        span = self._attempt = self._tracer.start_span(
            f"upstream {provider}",
            context=set_span_in_context(self.root),
            kind=SpanKind.CLIENT,
            attributes={
                "configbus.provider": provider,
                "configbus.deployment": deployment,
                "configbus.attempt": n,
            },
        )
        return {"traceparent": traceparent_of(span)}

    def attempt_end(self, outcome: str) -> None:
        span, self._attempt = self._attempt, None
        if span is not None:
            span.set_attribute("configbus.outcome", outcome)
            if outcome != "ok":
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.end()

    def end(self, status: int, provider: str | None = None) -> None:
        self.attempt_end("cancelled")  # an attempt still open did not finish
        root = self.root
        root.set_attribute("http.response.status_code", status)
        if provider:
            root.set_attribute("configbus.provider", provider)
        if status >= 500:
            root.set_status(Status(StatusCode.ERROR))
        root.end()
