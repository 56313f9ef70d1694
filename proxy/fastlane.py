"""The replica's HTTP/1.1 server protocol: the hot POSTs go straight to their handler.

uvicorn's protocol (with the header limits and timeouts of `configbus.httpguard`) serves
every request; for `POST /v1/chat/completions` and `/v1/embeddings` this subclass skips
what they do not need, measured with py-spy at c=64: the app's dispatch layer, two regular
expressions per response header (these headers are the handler's own; the one a client
supplies, `x-request-id`, is checked when it is read), and a second write per answer
(uvicorn writes the head, then the body as a chunk: here a whole answer is one write with a
content-length, and a stream's head goes out with its first chunk).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle

from configbus import GuardedProtocol
from proxy.chat import HANDLERS

_HOT = {path.encode(): name for path, name in HANDLERS.items()}
_PATHS = {path.encode(): path for path in HANDLERS}


class _Cycle(RequestResponseCycle):
    """uvicorn's request/response cycle with a leaner `send` (see the module's doc). It
    writes no access-log line: `configbus proxy` runs uvicorn without one."""

    _status = 0
    _headers: Any = ()

    async def send(self, message: ASGISendEvent) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        if not self.response_started:
            if message["type"] != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {message['type']}")
            self.response_started = True
            self.waiting_for_100_continue = False
            self._status = message["status"]
            self._headers = message.get("headers", ())
            return  # written with the first body bytes
        if self.response_complete or message["type"] != "http.response.body":
            raise RuntimeError(f"unexpected {message['type']} after the answer")
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if self._headers is not None:
            self.transport.write(self._head(body, more))
        elif more:
            if body:
                self.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self.transport.write(
                b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
            )
        if not more:
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _head(self, body: bytes, more: bool) -> bytes:
        """The status line and headers, and the first body bytes: all of the answer, with its
        length, or the first chunk of a chunked one."""
        parts = [STATUS_LINE[self._status]]
        for name, value in self.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in self._headers:
            parts += (name, b": ", value, b"\r\n")
        self._headers = None
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        if more:
            self.chunked_encoding = True
            parts.append(b"transfer-encoding: chunked\r\n\r\n")
            if body:
                parts.append(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            parts.append(b"content-length: %d\r\n\r\n" % len(body))
            parts.append(body)
        return b"".join(parts)


class ReplicaProtocol(GuardedProtocol):
    def _start_request(self) -> None:
        name = _HOT.get(self.url)
        handler = None if name is None else self.app_state.get(name)
        parser = self.parser
        if (
            handler is None
            or parser.get_method() != b"POST"
            or self.limit_concurrency is not None
            or parser.should_upgrade()
        ):
            super()._start_request()  # uvicorn's cycle and the app
            return
        version = parser.get_http_version()
        scope = self.scope
        scope["method"] = "POST"
        if version != "1.1":
            scope["http_version"] = version
        scope["path"] = self.root_path + _PATHS[self.url]
        scope["raw_path"] = self.root_path.encode("ascii") + self.url
        scope["query_string"] = b""
        previous = self.cycle
        self.cycle = cycle = _Cycle(
            scope=scope,
            transport=self.transport,
            flow=self.flow,
            logger=self.logger,
            access_logger=self.access_logger,
            access_log=self.access_log,
            default_headers=self.server_state.default_headers,
            message_event=asyncio.Event(),
            expect_100_continue=self.expect_100_continue,
            keep_alive=version != "1.0" and parser.should_keep_alive(),
            on_response=self.on_response_complete,
        )
        if previous is None or previous.response_complete:
            self._start_asgi_task(cycle, handler.serve)
        else:  # pipelined: after the one before it
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, handler.serve))
