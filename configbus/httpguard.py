"""Header limits and read timeouts for both services' HTTP/1.1 server (uvicorn, httptools).

An ASGI app sees a request only once its headers are complete, so a guard there cannot stop
20,000 headers, a 10 MB header or a client that sends one header byte a second: the limits
live in the protocol. `guarded_protocol(limits)` is uvicorn's httptools protocol plus:

- at most `max_headers` header lines and `max_header_bytes` bytes of request line and
  headers, else 431 and the connection is closed (bytes are counted as they arrive, before
  httptools buffers a header value);
- the request line and headers must arrive within `header_timeout_s` of the connection
  (or of the request's first byte on a kept-alive connection), else 408 and close;
- the body within `body_timeout_s` of the headers, else 408 (or a plain close once the
  answer has started) — a slowloris holds nothing for long.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("configbus.http")

DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_HEADER_BYTES = 64 * 1024
DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 60.0


@dataclass(frozen=True, kw_only=True)
class HttpLimits:
    max_headers: int = DEFAULT_MAX_HEADERS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a request that broke a limit."""


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedProtocol(HttpToolsProtocol):
    limits: ClassVar[HttpLimits] = HttpLimits()

    # The request path pays for the guard: per request it only stamps a deadline (a float)
    # at each phase; one watchdog timer per connection enforces it, and headers are counted
    # once they are complete (their bytes are limited as they arrive, which bounds memory).
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._tail = b""
        self._phase = "headers"  # what must arrive by the deadline; "" while answering
        self._deadline = 0.0
        self._watchdog: asyncio.TimerHandle | None = None

    # -- the watchdog
    def _check_every(self) -> float:
        return min(1.0, self.limits.header_timeout_s / 4, self.limits.body_timeout_s / 4)

    def _watch(self) -> None:
        self._watchdog = None
        if self.transport.is_closing():
            return
        if self._phase and self.loop.time() > self._deadline:
            self._expired(self._phase)
            return
        self._watchdog = self.loop.call_later(self._check_every(), self._watch)

    def _expect(self, phase: str, seconds: float) -> None:
        self._phase, self._deadline = phase, self.loop.time() + seconds

    def _expired(self, what: str) -> None:
        started = self.cycle is not None and self.cycle.response_started and not self._in_head
        if started:
            self.transport.close()
        else:
            self._refuse(408, f"request {what} not received in time")

    def _refuse(self, status: int, message: str) -> None:
        log.warning("%s: %s", self.client, message)
        body = message.encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status, _REASONS[status], len(body), body)
        )
        self.transport.close()
        self._phase = ""
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()

    # -- protocol
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect("headers", self.limits.header_timeout_s)
        self._watchdog = self.loop.call_later(self._check_every(), self._watch)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._in_head:
            # Count only what belongs to the head: a body may follow in the same read.
            window = self._tail + data
            end = window.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = window[-3:]
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(431, f"request headers exceed {self.limits.max_header_bytes} bytes")
                return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._refusal is None:
                raise
            self._refuse(*self._refusal)
        except httptools.HttpParserError:
            self.send_400_response("Invalid HTTP request received.")
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    _refusal: tuple[int, str] | None = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if not self._phase:  # a kept-alive connection's next request
            self._expect("headers", self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_bytes, self._tail = False, 0, b""
        if len(self.headers) > self.limits.max_headers:
            self._refusal = (431, f"more than {self.limits.max_headers} request headers")
            raise _Refused
        self._expect("body", self.limits.body_timeout_s)
        self._start_request()

    def _start_request(self) -> None:
        """Make the request's cycle and start the app on it (a subclass may serve some
        requests itself)."""
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._phase = ""
        super().on_message_complete()


def guarded_protocol(
    limits: HttpLimits, base: type[GuardedProtocol] = GuardedProtocol
) -> type[GuardedProtocol]:
    """The protocol class for uvicorn's `http=`: `base` with `limits`."""
    return type(base.__name__, (base,), {"limits": limits})
