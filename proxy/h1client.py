"""The replica's HTTP/1.1 client for upstream calls: one keep-alive pool per provider, over
asyncio protocols and httptools' response parser.

Why not aiohttp's client: on the hot path it was a third of a replica's CPU per request
(py-spy at c=64: the session's request pipeline, request and response objects, payload
writers, timer handles, stream readers). Here a request is one vectored write of a prebuilt
head and the body and one parser pass over the answer. What an upstream call needs is kept:
keep-alive with a connection cap and FIFO waiters, idle expiry, connect / total / per-read
timeouts, TLS, length-delimited, chunked and read-to-close bodies, gzip and deflate bodies
decoded, a cap on the answer's head and on a buffered body, back-pressure on streams.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024  # a buffered (non-stream) answer
_PAUSE_AT = 256 * 1024  # a stream's unread bytes before the upstream socket is paused
_RESUME_AT = 64 * 1024


class UpstreamError(Exception):
    """The upstream could not be talked to: refused, reset, closed early, or it answered
    something that is not HTTP/1.x."""


def _checked(what: str, value: str) -> bytes:
    raw = value.encode("latin-1")
    if any((b < 0x20 and b != 0x09) or b == 0x7F for b in raw):
        raise ValueError(f"{what} holds a control character (CR, LF or NUL)")
    return raw


def header_block(headers: dict[str, str]) -> bytes:
    """`name: value\\r\\n` lines, refusing what would split or end the request head."""
    return b"".join(
        _checked(f"header name {k!r}", k) + b": " + _checked(f"header {k!r}", v) + b"\r\n"
        for k, v in headers.items()
    )


class Origin:
    """Where a pool connects: scheme, host and port of a URL, and its `host` header."""

    __slots__ = ("host", "host_header", "port", "tls")

    def __init__(self, url: str, host_header: str | None = None) -> None:
        """`host_header`: sent instead of the URL's host (a virtual host behind an address)."""
        u = urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = u.scheme == "https"
        self.host = u.hostname
        self.port = u.port or (443 if self.tls else 80)
        if host_header is None:
            default = self.port == (443 if self.tls else 80)
            name = f"[{self.host}]" if ":" in self.host else self.host
            host_header = name if default else f"{name}:{self.port}"
        self.host_header = _checked("host header", host_header)


def request_target(url: str) -> bytes:
    """The path and query of `url`, as sent on the request line."""
    u = urlsplit(url)  # drops CR, LF and tabs itself
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    if " " in target:
        raise ValueError(f"URL path {target!r} holds a space")
    return _checked("URL path", target)


class Response:
    """An upstream's answer. Non-stream: complete when `Pool.request` returns (`body`).
    Stream: headers known; `chunks()` yields the body as it arrives; `release()` when done
    (an unfinished answer's connection is closed, not reused)."""

    __slots__ = (
        "_complete",
        "_conn",
        "_decoder",
        "_error",
        "_head_bytes",
        "_parts",
        "_paused",
        "_pool",
        "_read_timeout",
        "_ready",
        "_size",
        "_stream",
        "_until_close",
        "_waiter",
        "body",
        "status",
    )

    def __init__(self, conn: _Conn, stream: bool, read_timeout: float) -> None:
        self.status = 0
        self.body = b""
        self._conn: _Conn | None = conn
        self._pool = conn.pool
        self._stream = stream
        self._parts: deque[bytes] = deque()
        self._size = 0
        self._ready: asyncio.Future[None] = conn.pool.loop.create_future()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._complete = False
        self._decoder: Any = None
        self._until_close = True
        self._head_bytes = 0
        self._read_timeout = read_timeout
        self._paused = False

    # -- the parser's side (called from the connection)
    def _header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > MAX_HEAD_BYTES:
            raise UpstreamError(f"answer head larger than {MAX_HEAD_BYTES} bytes")
        n = name.lower()
        if n == b"content-length" or n == b"transfer-encoding":
            self._until_close = False
        elif n == b"content-encoding":
            enc = value.strip().lower()
            if enc in (b"gzip", b"x-gzip", b"deflate"):
                # wbits 47: zlib or gzip framing, detected from the first bytes.
                self._decoder = zlib.decompressobj(47)
            elif enc not in (b"", b"identity"):
                raise UpstreamError(f"unsupported content-encoding {enc.decode('latin-1')!r}")

    def _headers_done(self, status: int) -> None:
        self.status = status
        if self._stream and not self._ready.done():
            self._ready.set_result(None)

    def _data(self, data: bytes) -> None:
        if self._decoder is not None:
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                raise UpstreamError(f"undecodable compressed answer: {exc}") from None
            if not data:
                return
        self._size += len(data)
        self._parts.append(data)
        if self._stream:
            self._wake()
            if self._size > _PAUSE_AT and not self._paused and self._conn is not None:
                self._paused = True
                self._conn.transport.pause_reading()
        elif self._size > MAX_BODY_BYTES:
            raise UpstreamError(f"answer larger than {MAX_BODY_BYTES} bytes")

    def _done(self) -> None:
        self._complete = True
        if self._decoder is not None:
            tail = self._decoder.flush()
            if tail:
                self._parts.append(tail)
        if not self._stream:
            parts = self._parts
            self.body = parts[0] if len(parts) == 1 else b"".join(parts)
            parts.clear()
            if not self._ready.done():
                self._ready.set_result(None)
        else:
            self._wake()

    def _fail(self, exc: BaseException) -> None:
        if self._complete or self._error is not None:
            return
        self._error = exc
        if not self._ready.done():
            self._ready.set_exception(exc)
            self._ready.exception()  # retrieved: a caller gone by now logs nothing
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- the caller's side
    async def read(self) -> bytes:
        """The whole body (a stream: what is left of it)."""
        if not self._stream:
            return self.body
        out = [chunk async for chunk in self.chunks()]
        return b"".join(out)

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = self._pool.loop
        parts = self._parts
        try:
            while True:
                while parts:
                    chunk = parts.popleft()
                    self._size -= len(chunk)
                    if self._paused and self._size < _RESUME_AT and self._conn is not None:
                        self._paused = False
                        self._conn.transport.resume_reading()
                    yield chunk
                if self._error is not None:
                    raise self._error
                if self._complete:
                    return
                w = self._waiter = loop.create_future()
                timer = loop.call_later(self._read_timeout, self._read_timed_out)
                try:
                    await w
                finally:
                    timer.cancel()
                    self._waiter = None
        finally:
            self.release()

    def _read_timed_out(self) -> None:
        self._fail(TimeoutError(f"no data from the upstream in {self._read_timeout:g} s"))
        if self._conn is not None:
            self._conn.abort()

    def release(self) -> None:
        """Done with the answer: an unfinished one's connection is closed, not reused."""
        conn, self._conn = self._conn, None
        if conn is not None and not self._complete:
            conn.abort()


class _Conn(asyncio.Protocol):
    __slots__ = ("closed", "idle_since", "parser", "pool", "resp", "transport")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser = httptools.HttpResponseParser(self)
        self.resp: Response | None = None
        self.closed = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.resp is None:  # bytes nobody asked for: the connection cannot be trusted
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._broken(cause if isinstance(cause, UpstreamError) else UpstreamError(str(exc)))
        except httptools.HttpParserError as exc:
            self._broken(UpstreamError(f"malformed HTTP answer: {exc}"))

    def _broken(self, exc: UpstreamError) -> None:
        r = self.resp
        if r is not None:
            r._fail(exc)
        self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        r, self.resp = self.resp, None
        if r is not None and not r._complete:
            if r.status and r._until_close:
                r._done()  # no length and not chunked: the body ends with the connection
            else:
                r._fail(UpstreamError("connection closed before the answer was complete"))
        self.pool._lost(self)

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    # -- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.resp is None:
            raise UpstreamError("an answer nobody asked for")
        self.resp._header(name, value)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status >= 200 and self.resp is not None:
            self.resp._headers_done(status)

    def on_body(self, body: bytes) -> None:
        if self.resp is not None and self.resp.status:
            self.resp._data(body)

    def on_message_complete(self) -> None:
        r = self.resp
        if r is None or not r.status:  # a 1xx interim answer: the real one follows
            return
        self.resp = None
        r._conn = None
        r._done()
        if self.parser.should_keep_alive() and not self.closed:
            self.pool._release(self)
        else:
            self.abort()


class Pool:
    """Keep-alive connections to one origin, at most `max_connections` open at once."""

    def __init__(
        self,
        origin: Origin,
        *,
        max_connections: int,
        keepalive_s: float,
        connect_timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.origin = origin
        self.loop = asyncio.get_running_loop()
        self.max_connections = max_connections
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self._ssl = (ssl_context or _default_tls()) if origin.tls else None
        self._idle: list[_Conn] = []  # most recently used last: it is the warmest
        self._open = 0  # connected or connecting
        self._waiters: deque[asyncio.Future[_Conn | None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    async def request(
        self,
        target: bytes,
        headers: bytes,
        body: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 - per phase, not one deadline (see below)
        stream: bool = False,
    ) -> Response:
        """POST `body` to `target` with `headers` (a `header_block`). Non-stream: the whole
        answer within `timeout`; stream: its head within `timeout`, then each read within
        `timeout` of the last. Raises UpstreamError or TimeoutError."""
        loop = self.loop
        deadline = loop.time() + timeout
        conn = await self._acquire(deadline)
        resp = Response(conn, stream, timeout)
        conn.resp = resp
        conn.transport.writelines(
            (
                b"POST %s HTTP/1.1\r\nhost: %s\r\ncontent-length: %d\r\n%s\r\n"
                % (target, self.origin.host_header, len(body), headers),
                body,
            )
        )
        timer = loop.call_at(deadline, _timed_out, resp, timeout)
        try:
            await resp._ready
        except BaseException:
            resp.release()
            raise
        finally:
            timer.cancel()
        return resp

    async def _acquire(self, deadline: float) -> _Conn:
        idle = self._idle
        if idle:
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                if not conn.closed and now - conn.idle_since < self.keepalive_s:
                    return conn
                conn.abort()
        while True:
            if self.closed:
                raise UpstreamError("pool closed")
            if self._open < self.max_connections:
                return await self._connect(deadline)
            fut: asyncio.Future[_Conn | None] = self.loop.create_future()
            self._waiters.append(fut)
            try:
                async with asyncio.timeout_at(deadline):
                    conn_or_none = await fut
            except BaseException:
                if fut.done() and not fut.cancelled() and fut.exception() is None:
                    handed = fut.result()
                    if handed is not None:
                        self._release(handed)
                    else:
                        self._hand(None)
                raise
            if conn_or_none is not None:
                return conn_or_none
            # None: a connection closed, a slot is free; connect unless someone was first

    async def _connect(self, deadline: float) -> _Conn:
        self._open += 1
        o = self.origin
        try:
            budget = min(self.connect_timeout_s, max(0.0, deadline - self.loop.time()))
            async with asyncio.timeout(budget):
                _, conn = await self.loop.create_connection(
                    lambda: _Conn(self),
                    o.host,
                    o.port,
                    ssl=self._ssl,
                    server_hostname=o.host if self._ssl is not None else None,
                )
        except TimeoutError:
            self._open -= 1
            self._hand(None)
            raise TimeoutError(f"connecting to {o.host}:{o.port} timed out") from None
        except OSError as exc:
            self._open -= 1
            self._hand(None)
            raise UpstreamError(f"cannot connect to {o.host}:{o.port}: {exc}") from None
        except BaseException:
            self._open -= 1
            self._hand(None)
            raise
        return conn

    def _release(self, conn: _Conn) -> None:
        if self.closed:
            conn.abort()
            return
        if self._hand(conn):
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self.keepalive_s, self._sweep)

    def _lost(self, conn: _Conn) -> None:
        self._open -= 1
        self._hand(None)

    def _hand(self, conn: _Conn | None) -> bool:
        """Give `conn` (None: a free slot to connect in) to the longest-waiting caller."""
        waiters = self._waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(conn)
                return True
        return False

    def _sweep(self) -> None:
        """Close connections idle for longer than keep-alive (the server may have already)."""
        self._sweeper = None
        cutoff = self.loop.time() - self.keepalive_s
        keep = []
        for conn in self._idle:
            if conn.idle_since <= cutoff or conn.closed:
                conn.abort()
            else:
                keep.append(conn)
        self._idle = keep
        if keep:
            self._sweeper = self.loop.call_later(self.keepalive_s, self._sweep)

    @property
    def open_connections(self) -> int:
        return self._open

    def close(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.abort()
        while self._waiters:
            w = self._waiters.popleft()
            if not w.done():
                w.set_exception(UpstreamError("pool closed"))
                w.exception()


@functools.cache
def _default_tls() -> ssl.SSLContext:
    """The system's CAs, loaded once (tens of milliseconds) for every pool that needs them."""
    return ssl.create_default_context()


def _timed_out(resp: Response, timeout: float) -> None:
    resp._fail(TimeoutError(f"no answer from the upstream in {timeout:g} s"))
    if resp._conn is not None:
        resp._conn.abort()
