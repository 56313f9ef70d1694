"""A proxy replica as `configbus proxy` runs it, tracing every request (sampler always_on)
into a batch span processor whose exporter discards: what tracing costs on the request
path, without a collector's network in the measure. Settings from CONFIGBUS_* variables.

    .venv/bin/python bench/traced_proxy.py PORT
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import uvicorn
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from proxy.app import create_app
from proxy.fastlane import ReplicaProtocol
from proxy.settings import ProxySettings


class Discard(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def main() -> None:
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    uvicorn.run(
        functools.partial(create_app, ProxySettings.from_env(), tracing=provider),
        factory=True,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http=ReplicaProtocol,  # as `configbus proxy` serves (its default header limits)
        lifespan="on",
        access_log=False,
        log_level="warning",
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
