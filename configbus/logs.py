"""Log lines as text or as JSON objects (`CONFIGBUS_LOG_FORMAT=json`), set up once per process.

A JSON line carries `time`, `level`, `logger`, `message` (and `exc` on an exception); a
line logged while a replica handles a chat request also carries its `request_id`,
`config_version` and, when tracing is on, `trace_id`. Those come from a context variable
the request sets: nothing is looked up per log call that was not set per request.
"""

from __future__ import annotations

import contextvars
import logging
import time
from typing import Any

import msgspec

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# (request id, config version, trace id or "") of the request this task serves.
request_context: contextvars.ContextVar[tuple[str, str, str] | None] = contextvars.ContextVar(
    "configbus_request", default=None
)
_encode = msgspec.json.Encoder().encode


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        ctx = request_context.get()
        if ctx is not None:
            line["request_id"], line["config_version"] = ctx[0], ctx[1]
            if ctx[2]:
                line["trace_id"] = ctx[2]
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _encode(line).decode()


def configure_logging(fmt: str, level: int | str = logging.INFO) -> None:
    """Root logging for a service process: `text` or `json` lines on stderr."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
