"""The fault proxy the chaos soak puts between replicas and Redis: each fault does to a
stream what a bad network does (delays and stalls, never lost or reordered bytes), and a
cut resets every connection while new ones work."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis

from configbus.tooling.faultproxy import RTO_MIN_S, FaultProxy, NetFaults, ThreadedFaultProxy
from tests.support import RedisServer


async def echo_server() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


async def round_trip(port: int, payload: bytes) -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    writer.write(payload)
    await writer.drain()
    got = await reader.readexactly(len(payload))
    took = time.monotonic() - started
    writer.close()
    return got, took


async def test_latency_is_added_in_each_direction_and_bytes_arrive_intact() -> None:
    server = await echo_server()
    async with server, FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
        _, base = await round_trip(proxy.port, b"x")
        proxy.faults = NetFaults(latency_s=0.1)
        payload = bytes(range(256)) * 4000  # 1 MB, many chunks
        got, took = await round_trip(proxy.port, payload)
        assert got == payload
        assert took >= 0.2  # 100 ms there, 100 ms back
        assert base < 0.1


async def test_loss_stalls_the_stream_by_a_retransmission_timeout_never_corrupts_it() -> None:
    server = await echo_server()
    async with server, FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1], seed=7) as p:
        p.faults = NetFaults(loss=0.15)
        times, payloads = [], [f"message {i:04d} ".encode() * 50 for i in range(12)]
        for payload in payloads:
            got, took = await round_trip(p.port, payload)
            assert got == payload
            times.append(took)
        assert p.stats.segments_lost > 0
        stalled = [t for t in times if t >= RTO_MIN_S]
        assert stalled, times  # some round trips waited for a retransmission...
        assert len(stalled) < len(times)  # ...and some did not


async def test_a_partition_holds_data_until_it_heals_and_a_cut_resets_every_connection() -> None:
    server = await echo_server()
    async with server, FaultProxy("127.0.0.1", server.sockets[0].getsockname()[1]) as proxy:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        proxy.faults = NetFaults(partition=True)
        writer.write(b"held")
        await writer.drain()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.4):
                await reader.readexactly(4)
        proxy.faults = NetFaults()
        async with asyncio.timeout(2):
            assert await reader.readexactly(4) == b"held"

        assert proxy.cut() == 1
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            async with asyncio.timeout(2):
                writer.write(b"after the cut")
                await writer.drain()
                await reader.readexactly(1)
        writer.close()
        got, _ = await round_trip(proxy.port, b"a new connection works")
        assert got == b"a new connection works"


async def test_redis_through_the_threaded_proxy_answers_under_latency_and_loss(
    redis_server: RedisServer,
) -> None:
    with ThreadedFaultProxy("127.0.0.1", redis_server.port, seed=3) as proxy:
        client = aioredis.Redis.from_url(proxy.url(), socket_timeout=5)
        try:
            await client.set("cb:faultproxy:k", "v")
            proxy.faults = NetFaults(latency_s=0.05, loss=0.1)
            started = time.monotonic()
            for i in range(10):
                assert await client.incr("cb:faultproxy:n") == i + 1
            assert time.monotonic() - started >= 10 * 0.1  # each round trip 2 x 50 ms
            assert proxy.cut() >= 1
            with pytest.raises(aioredis.ConnectionError):
                await client.get("cb:faultproxy:k")  # the cut connection
            proxy.faults = NetFaults()
            assert await client.get("cb:faultproxy:k") == b"v"  # a new one
            assert proxy.stats()["cut"] >= 1
        finally:
            await client.delete("cb:faultproxy:k", "cb:faultproxy:n")
            await client.aclose()
