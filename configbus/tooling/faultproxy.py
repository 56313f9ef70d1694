"""A fault-injecting TCP proxy: what a bad network does to a TCP stream, without `netem`.

    proxy = FaultProxy("127.0.0.1", redis_port)      # listens on a free loopback port
    async with proxy:                                # or ThreadedFaultProxy: its own thread
        client = connect(proxy.url("redis"))
        proxy.faults = NetFaults(latency_s=0.2, loss=0.1)
        ...
        proxy.cut()                                  # every connection reset at once

Clients connect to the proxy; each connection gets one to the target, and bytes are
copied both ways, in order, never altered. The faults are the ones a TCP stream actually
sees (the kernel below it hides packets; an application sees only delays, stalls and
resets):

- `latency_s`: every chunk is delivered `latency_s` after it was read, in each direction
  (a round trip costs `2 * latency_s` more). Chunks in flight overlap: it is a long link,
  not a slow one.
- `loss`: the probability that one TCP segment (`SEGMENT_BYTES` of a chunk, rounded up)
  is lost. Real loss never corrupts or drops bytes of a stream: the sender retransmits
  after its retransmission timeout (Linux: at least 200 ms, `max(RTO_MIN_S, 2*RTT)` here),
  doubling it for each further loss of the same segment, and the receiver holds everything
  behind the hole meanwhile (head-of-line blocking). So a lost segment is modelled as a
  stall of that length for its chunk and every chunk behind it on that direction of that
  connection (holes in one chunk are repaired in the same rounds, as with SACK: the chunk
  waits for its unluckiest segment). (Fast retransmit, which can repair a loss in one RTT when enough data
  follows, is not modelled: request/response traffic such as Redis's mostly has too
  little in flight for it; the stalls here are the common case, not the worst.)
- `partition`: nothing gets through either way; what is sent is held (TCP retransmits it)
  and delivered when the partition heals, unless a peer gave up and closed first. New
  connections are accepted (the listening side is local) but reach the target only then.
- `cut()`: every open connection is reset (RST to both peers), as a middlebox or a
  failover dropping its state would; new connections work at once.

The proxy never decides anything on its own: no fault unless one is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SEGMENT_BYTES = 1448  # one Ethernet-sized TCP segment's payload
RTO_MIN_S = 0.2  # Linux's minimum retransmission timeout
RTO_MAX_S = 3.0  # a cap on the backoff, so one unlucky chunk cannot stall a test for long
READ_BYTES = 65536


@dataclass(frozen=True, kw_only=True)
class NetFaults:
    """What the link does now; `NetFaults()` is a healthy link."""

    latency_s: float = 0.0
    loss: float = 0.0  # per segment, 0..1
    partition: bool = False

    def __post_init__(self) -> None:
        if self.latency_s < 0:
            raise ValueError(f"latency_s: {self.latency_s} is negative")
        if not 0.0 <= self.loss < 1.0:
            raise ValueError(f"loss: {self.loss} is not in [0, 1)")


@dataclass
class ProxyStats:
    """What went through, and what the faults did to it."""

    connections: int = 0
    open: int = 0
    bytes: int = 0
    chunks: int = 0
    segments_lost: int = 0
    stall_s: float = 0.0  # total retransmission stalls added
    cut: int = 0  # connections reset by cut()

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "open": self.open,
            "bytes": self.bytes,
            "chunks": self.chunks,
            "segments_lost": self.segments_lost,
            "stall_s": round(self.stall_s, 3),
            "cut": self.cut,
        }


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a dropped connection looks to its peer."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Pipe:
    """One direction of one connection: read chunks, stamp each with when it may arrive,
    deliver them in order at that time."""

    def __init__(self, proxy: FaultProxy, src: asyncio.StreamReader, dst: asyncio.StreamWriter):
        self.proxy, self.src, self.dst = proxy, src, dst
        self.queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        self.last_due = 0.0

    def _due(self, chunk: bytes) -> float:
        faults, stats = self.proxy.faults, self.proxy.stats
        due = time.monotonic() + faults.latency_s
        if faults.loss:
            rto = max(RTO_MIN_S, 4 * faults.latency_s)  # 2 * RTT, RTT = 2 * latency
            # The chunk's segments travel together and their holes are repaired in the same
            # retransmission rounds (SACK): the chunk waits for its unluckiest segment.
            stall = 0.0
            for _ in range(-(-len(chunk) // SEGMENT_BYTES)):
                backoff, waited = rto, 0.0
                while self.proxy.rng.random() < faults.loss:
                    stats.segments_lost += 1
                    waited += backoff
                    backoff = min(backoff * 2, RTO_MAX_S)
                stall = max(stall, waited)
            stats.stall_s += stall
            due += stall
        # In order: nothing overtakes a chunk held behind a hole.
        self.last_due = max(due, self.last_due)
        return self.last_due

    async def read(self) -> None:
        try:
            while chunk := await self.src.read(READ_BYTES):
                self.proxy.stats.bytes += len(chunk)
                self.proxy.stats.chunks += 1
                self.queue.put_nowait((self._due(chunk), chunk))
        finally:
            self.queue.put_nowait((0.0, b""))  # end of stream, after what is queued

    async def write(self) -> None:
        while True:
            due, chunk = await self.queue.get()
            if not chunk:
                with contextlib.suppress(OSError, RuntimeError):
                    if self.dst.can_write_eof():
                        self.dst.write_eof()
                return
            while True:
                wait = due - time.monotonic()
                if self.proxy.faults.partition:
                    # Held, as TCP holds unacknowledged data, until the link returns.
                    await self.proxy.healed.wait()
                    due = max(due, time.monotonic() + RTO_MIN_S)
                    continue
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            self.dst.write(chunk)
            await self.dst.drain()


class FaultProxy:
    """A TCP proxy to `target_host:target_port` on `listen_host:listen_port` (0: free)."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        seed: int | None = None,
    ) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.port = listen_port
        self.rng = random.Random(seed)
        self.stats = ProxyStats()
        self._faults = NetFaults()
        self.healed = asyncio.Event()
        self.healed.set()
        self._server: asyncio.Server | None = None
        self._conns: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def faults(self) -> NetFaults:
        return self._faults

    @faults.setter
    def faults(self, faults: NetFaults) -> None:
        self._faults = faults
        if faults.partition:
            self.healed.clear()
        else:
            self.healed.set()

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        return f"{scheme}://{self.listen_host}:{self.port}{path}"

    async def start(self) -> FaultProxy:
        if self._server is not None:
            raise RuntimeError(f"fault proxy on port {self.port} is already running")
        self._server = await asyncio.start_server(self._serve, self.listen_host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self.cut()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def cut(self) -> int:
        """Reset every open connection; returns how many."""
        conns, self._conns = self._conns, set()
        for client, upstream in conns:
            _reset(client)
            _reset(upstream)
        self.stats.cut += len(conns)
        return len(conns)

    async def _serve(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.stats.connections += 1
        self.stats.open += 1
        try:
            await self.healed.wait()  # the SYN is retransmitted until the link returns
            try:
                u_reader, u_writer = await asyncio.open_connection(*self.target)
            except OSError:
                _reset(c_writer)  # the target refuses: so does the proxy
                return
            pair = (c_writer, u_writer)
            self._conns.add(pair)
            pipes = (_Pipe(self, c_reader, u_writer), _Pipe(self, u_reader, c_writer))
            steps = [asyncio.ensure_future(s) for p in pipes for s in (p.read(), p.write())]
            try:
                # Until both directions ended, or one failed (a peer reset, or cut()).
                await asyncio.wait(steps, return_when=asyncio.FIRST_EXCEPTION)
            finally:
                for step in steps:
                    step.cancel()
                await asyncio.gather(*steps, return_exceptions=True)
                self._conns.discard(pair)
                for w in pair:
                    if not w.is_closing():
                        _reset(w)
        finally:
            self.stats.open -= 1
            self._tasks.discard(task)


class ThreadedFaultProxy:
    """A `FaultProxy` on its own event loop in a daemon thread, so a busy caller's loop (a
    soak driving load) adds no delay of its own to the link. Setting `faults` and `cut()`
    are safe from any thread."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        seed: int | None = None,
    ) -> None:
        self._args = (target_host, target_port)
        self._options: dict[str, Any] = {
            "listen_host": listen_host, "listen_port": listen_port, "seed": seed
        }  # fmt: skip
        self.listen_host = listen_host
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.proxy: FaultProxy | None = None

    def start(self) -> ThreadedFaultProxy:
        if self._thread is not None:
            raise RuntimeError("fault proxy thread is already running")
        ready = threading.Event()
        failed: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self.proxy = loop.run_until_complete(
                    FaultProxy(*self._args, **self._options).start()
                )
            except BaseException as exc:
                failed.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.proxy.stop())
            loop.close()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failed:
            self._thread = None
            raise failed[0]
        return self

    def _call(self, fn: Callable[[FaultProxy], Any]) -> Any:
        if self._loop is None or self.proxy is None:
            raise RuntimeError("fault proxy is not running")
        proxy = self.proxy

        async def call() -> Any:
            return fn(proxy)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(5)

    @property
    def port(self) -> int:
        """The listening port (known before `start` when one was given)."""
        if self.proxy is not None:
            return self.proxy.port
        port = int(self._options["listen_port"])
        if not port:
            raise RuntimeError("the port is picked at start: give listen_port to know it now")
        return port

    def url(self, scheme: str = "redis", path: str = "/0") -> str:
        return f"{scheme}://{self.listen_host}:{self.port}{path}"

    @property
    def faults(self) -> NetFaults:
        assert self.proxy is not None
        return self.proxy.faults

    @faults.setter
    def faults(self, faults: NetFaults) -> None:
        def set_faults(p: FaultProxy) -> None:
            p.faults = faults

        self._call(set_faults)

    def cut(self) -> int:
        return int(self._call(lambda p: p.cut()))

    def stats(self) -> dict[str, Any]:
        return dict(self._call(lambda p: p.stats.as_dict()))

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None
        self._loop = None

    def __enter__(self) -> ThreadedFaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
