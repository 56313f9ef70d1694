"""The upstream HTTP/1.1 client against scripted loopback servers: what it sends, the body
framings it reads, keep-alive, the pool's cap, timeouts, broken answers, TLS."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.h1client import (
    Origin,
    Pool,
    UpstreamError,
    header_block,
    request_target,
)

Answer = Callable[[bytes, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """Answers each request on a connection with `answer(request_bytes, writer)`."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                req = head + await reader.readexactly(length)
                self.requests.append(req)
                await self.answer(req, writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@asynccontextmanager
async def serve(answer: Answer, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    s = Server(answer)
    srv = await asyncio.start_server(s.handle, "127.0.0.1", 0, ssl=tls)
    s.port = srv.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        srv.close()


def pool_for(s: Server, *, scheme: str = "http", **kw: object) -> Pool:
    opts: dict[str, object] = {"max_connections": 10, "keepalive_s": 30.0, "connect_timeout_s": 2}
    opts.update(kw)
    return Pool(Origin(f"{scheme}://127.0.0.1:{s.port}/v1"), **opts)  # type: ignore[arg-type,attr-defined]


def ok(body: bytes) -> Answer:
    async def answer(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    return answer


HEAD = header_block({"content-type": "application/json", "authorization": "Bearer k"})


async def test_request_line_headers_and_body_sent_and_connection_reused() -> None:
    async with serve(ok(b'{"ok":1}')) as s:
        pool = pool_for(s)
        for i in range(3):
            r = await pool.request(b"/v1/chat/completions", HEAD, b'{"n":%d}' % i, timeout=2)
            assert (r.status, r.body) == (200, b'{"ok":1}')
        pool.close()
    assert s.connections == 1
    first = s.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:%d\r\n" % s.port in first  # type: ignore[attr-defined]
    assert b"\r\nauthorization: Bearer k\r\n" in first and first.endswith(b'\r\n\r\n{"n":0}')


async def test_chunked_gzip_and_read_to_close_bodies() -> None:
    async def chunked(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for part in (b"hello ", b"chunked ", b"world"):
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
        w.write(b"0\r\n\r\n")

    async def gzipped(req: bytes, w: asyncio.StreamWriter) -> None:
        body = gzip.compress(b'{"zipped":true}')
        w.write(
            b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        w.write(body)

    async def until_close(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.0 502 Bad Gateway\r\n\r\nno length here")
        await w.drain()
        w.close()

    for answer, want in (
        (chunked, (200, b"hello chunked world")),
        (gzipped, (200, b'{"zipped":true}')),
        (until_close, (502, b"no length here")),
    ):
        async with serve(answer) as s:
            pool = pool_for(s)
            r = await pool.request(b"/", HEAD, b"{}", timeout=2)
            assert (r.status, r.body) == want
            pool.close()


async def test_pool_cap_queues_callers_on_one_connection() -> None:
    async def slow(req: bytes, w: asyncio.StreamWriter) -> None:
        await asyncio.sleep(0.05)
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with serve(slow) as s:
        pool = pool_for(s, max_connections=1)
        rs = await asyncio.gather(*(pool.request(b"/", HEAD, b"{}", timeout=5) for _ in range(5)))
        assert [r.body for r in rs] == [b"ok"] * 5
        assert s.connections == 1 and pool.open_connections == 1
        pool.close()


async def test_total_timeout_and_the_timed_out_connection_is_not_reused() -> None:
    calls = 0

    async def first_hangs(req: bytes, w: asyncio.StreamWriter) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with serve(first_hangs) as s:
        pool = pool_for(s)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            await pool.request(b"/", HEAD, b"{}", timeout=0.2)
        assert 0.15 < loop.time() - t0 < 1.0
        r = await pool.request(b"/", HEAD, b"{}", timeout=2)
        assert r.body == b"ok" and s.connections == 2
        pool.close()


async def test_stream_chunks_in_order_then_a_read_timeout() -> None:
    async def events(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        w.write(b"transfer-encoding: chunked\r\n\r\n")
        for i in range(3):
            part = b"data: %d\n\n" % i
            w.write(b"%x\r\n%s\r\n" % (len(part), part))
            await w.drain()
            await asyncio.sleep(0.01)
        if b"stall" in req:
            await asyncio.sleep(5)
        w.write(b"0\r\n\r\n")

    async with serve(events) as s:
        pool = pool_for(s)
        r = await pool.request(b"/", HEAD, b"{}", timeout=2, stream=True)
        assert r.status == 200
        assert b"".join([c async for c in r.chunks()]) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        r = await pool.request(b"/", HEAD, b'{"stall":1}', timeout=0.3, stream=True)
        got = []
        with pytest.raises(TimeoutError):
            async for c in r.chunks():
                got.append(c)
        assert b"".join(got) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
        pool.close()


async def test_abandoned_stream_closes_its_connection() -> None:
    async def endless(req: bytes, w: asyncio.StreamWriter) -> None:
        if b"short" in req:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            return
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        while True:
            w.write(b"5\r\nhello\r\n")
            await w.drain()
            await asyncio.sleep(0.01)

    async with serve(endless) as s:
        pool = pool_for(s)
        r = await pool.request(b"/", HEAD, b"{}", timeout=2, stream=True)
        async for _ in r.chunks():
            break  # the client went away
        r = await pool.request(b"/", HEAD, b"short", timeout=2)
        assert r.body == b"ok" and s.connections == 2
        pool.close()


async def test_refused_reset_and_garbage_are_upstream_errors() -> None:
    async def cut(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part")
        await w.drain()
        w.transport.abort()

    async def garbage(req: bytes, w: asyncio.StreamWriter) -> None:
        w.write(b"SSH-2.0-OpenSSH\r\n\r\n")

    for answer, says in ((cut, "closed before the answer"), (garbage, "malformed")):
        async with serve(answer) as s:
            pool = pool_for(s)
            with pytest.raises(UpstreamError, match=says):
                await pool.request(b"/", HEAD, b"{}", timeout=2)
            pool.close()
    async with serve(ok(b"")) as s:
        port = s.port  # type: ignore[attr-defined]
    pool = Pool(Origin(f"http://127.0.0.1:{port}"), max_connections=1, keepalive_s=1,
                connect_timeout_s=1)  # fmt: skip
    with pytest.raises(UpstreamError, match="cannot connect"):
        await pool.request(b"/", HEAD, b"{}", timeout=2)


async def test_idle_connections_expire_after_keepalive() -> None:
    async with serve(ok(b"ok")) as s:
        pool = pool_for(s, keepalive_s=0.1)
        await pool.request(b"/", HEAD, b"{}", timeout=2)
        deadline = asyncio.get_running_loop().time() + 3
        while pool.open_connections and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        assert pool.open_connections == 0  # closed by the sweep, not kept forever
        await pool.request(b"/", HEAD, b"{}", timeout=2)
        assert s.connections == 2
        pool.close()


def test_headers_and_urls_that_would_split_the_request_are_refused() -> None:
    with pytest.raises(ValueError, match="control character"):
        header_block({"x-team": "a\r\nx-injected: 1"})
    with pytest.raises(ValueError, match="space"):
        request_target("http://h/v1/chat HTTP/1.0")
    assert request_target("http://h/v1/chat\r\nx") == b"/v1/chatx"
    assert request_target("http://h:8080/openai/x?api-version=1") == b"/openai/x?api-version=1"
    assert Origin("https://[::1]/v1").host_header == b"[::1]"
    assert Origin("http://h:8080").host_header == b"h:8080"


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_upstream_verified_against_its_ca(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    async with serve(ok(b"secure"), tls=server_ctx) as s:
        trusting = ssl.create_default_context(cafile=str(cert))
        pool = pool_for(s, scheme="https", ssl_context=trusting)
        r = await pool.request(b"/", HEAD, b"{}", timeout=5)
        assert (r.status, r.body) == (200, b"secure")
        pool.close()
        untrusting = pool_for(s, scheme="https")  # the system's CAs do not know this one
        with pytest.raises(UpstreamError, match="cannot connect"):
            await untrusting.request(b"/", HEAD, b"{}", timeout=5)
        untrusting.close()


async def test_a_providers_host_header_names_a_virtual_host_sent_once() -> None:
    from configbus.document import CircuitBreaker, Provider
    from proxy.upstream import ProviderRuntime

    async with serve(ok(b"{}")) as s:
        provider = Provider(
            name="vhost",
            base_url=f"http://127.0.0.1:{s.port}/v1",  # type: ignore[attr-defined]
            headers={"Host": "api.example.com", "Content-Length": "999", "x-team": "t"},
        )
        p = ProviderRuntime(provider, CircuitBreaker(), None)
        r = await p.post(b'{"a":1}', stream=False)
        assert r.status == 200
        p.close()
    head = s.requests[0].split(b"\r\n\r\n")[0].lower().split(b"\r\n")
    assert [h for h in head if h.startswith(b"host:")] == [b"host: api.example.com"]
    assert [h for h in head if h.startswith(b"content-length:")] == [b"content-length: 7"]
    assert b"x-team: t" in head
