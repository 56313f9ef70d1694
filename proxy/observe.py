"""What every chat answer tells about itself: request id, config version, the replica's time.

`x-request-id` is the client's when it sent a usable one, else made from a per-process
random prefix and a counter (no syscall, no hashing). `x-configbus-overhead-ms` is the
time the replica spent on the request minus the time it waited for upstreams, up to the
moment the answer's headers go out (for a stream: up to its first byte).
"""

from __future__ import annotations

import itertools
import os
import re
import time
from collections.abc import Callable

REQUEST_ID = b"x-request-id"
CONFIG_VERSION = b"x-configbus-config-version"
OVERHEAD_MS = b"x-configbus-overhead-ms"
TRACEPARENT = b"traceparent"
# A client's id longer than this is replaced (it is echoed back, and logged).
MAX_REQUEST_ID = 128
_NO_VERSION = b"none"

_SANE_ID = re.compile(rb"[\x21-\x7e]+")
_prefix = os.urandom(6).hex().encode() + b"-"
_counter = itertools.count(1)


def new_request_id() -> bytes:
    return _prefix + b"%x" % next(_counter)


def request_id(sent: bytes | None) -> bytes:
    """The client's id if it sent a sane one (visible ASCII: it is echoed in a header the
    replica writes unchecked), else ours."""
    if sent and len(sent) <= MAX_REQUEST_ID and _SANE_ID.fullmatch(sent):
        return sent
    return new_request_id()


class Exchange:
    """One request's bookkeeping: its id, when it started, how long upstreams took."""

    __slots__ = ("cache", "request_id", "started", "upstream_s", "version")

    def __init__(self, rid: bytes, started: float, version: bytes = _NO_VERSION) -> None:
        # What the response cache did: b"hit" (answered from it, no upstream was asked),
        # b"miss", or None (the model has no cache). Usage accounting reads it.
        self.cache: bytes | None = None
        self.request_id = rid
        self.started = started
        self.upstream_s = 0.0
        self.version = version

    def overhead_ms(self) -> float:
        return (time.perf_counter() - self.started - self.upstream_s) * 1000.0

    def headers(self, observe: Callable[[float], None] | None = None) -> list[tuple[bytes, bytes]]:
        """The three headers, with the overhead as of now (given to `observe` in seconds)."""
        ms = self.overhead_ms()
        if observe is not None:
            observe(ms / 1000.0)
        return [
            (REQUEST_ID, self.request_id),
            (CONFIG_VERSION, self.version),
            (OVERHEAD_MS, b"%.3f" % ms),
        ]
