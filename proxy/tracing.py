"""A chat request as a trace: one server span, a client span per upstream attempt.

Built only when tracing is on; the handler holds None otherwise and pays one `is None`
test per hook. Attributes name the model, the provider and deployment of each attempt, its
outcome, the config version, the client by its name (never its key) and limit decisions.
"""

from __future__ import annotations

from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, set_span_in_context

from configbus.tracing import context_from_traceparent, traceparent_of


class RequestTrace:
    """The spans of one request. Root attributes learnt on the way are kept in plain slots
    and set in one call when the span ends: the SDK locks and cleans per call."""

    __slots__ = ("_attempt", "_client", "_limit", "_model", "_provider", "_tracer", "root")

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
        self._client = self._model = self._limit = self._provider = ""

    def trace_id(self) -> str:
        return f"{self.root.get_span_context().trace_id:032x}"

    def identify(self, client: str, model: str) -> None:
        self._client, self._model = client, model

    def limit(self, decision: str, provider: str = "") -> None:
        """A limit decision: `admitted`, `shadow` (would have refused), `refused`; a
        provider's refusal is named `refused:<provider>`. The last one counts."""
        self._limit = f"{decision}:{provider}" if provider else decision

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

    def cache(self, outcome: str) -> None:
        """The response cache's answer for this request: `hit` or `miss`."""
        self.root.set_attribute("configbus.cache", outcome)

    def attempt_end(self, outcome: str, provider: str = "") -> None:
        """End the open attempt; `provider`: it served the answer."""
        span, self._attempt = self._attempt, None
        if span is not None:
            span.set_attribute("configbus.outcome", outcome)
            if outcome != "ok":
                span.set_status(Status(StatusCode.ERROR, outcome))
            span.end()
        if provider:
            self._provider = provider

    def end(self, status: int) -> None:
        self.attempt_end("cancelled")  # an attempt still open did not finish
        root = self.root
        attrs: dict[str, str | int] = {"http.response.status_code": status}
        if self._model:
            attrs["gen_ai.request.model"] = self._model
            attrs["configbus.client"] = self._client
        if self._provider:
            attrs["configbus.provider"] = self._provider
        if self._limit:
            attrs["configbus.limit.decision"] = self._limit
        root.set_attributes(attrs)
        if status >= 500:
            root.set_status(Status(StatusCode.ERROR))
        root.end()
