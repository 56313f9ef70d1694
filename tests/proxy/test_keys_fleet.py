"""Collection keys on a real fleet: three replica processes, a key revoked or rotated
under load."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import msgspec
import pytest
import redis.asyncio as aioredis

from configbus.api import Replicas
from configbus.keystore import KeyStore
from configbus.store import Store
from tests.admin import helpers as admin_helpers
from tests.proxy.helpers import CHAT, Mock, Replica, data_for, publish, running
from tests.support import RedisServer, eventually, wait_for

NS = "keys-fleet"
REVOKE_BOUND_S = 0.1


@pytest.fixture(scope="module")
def fleet(redis_server: RedisServer) -> Iterator[list[Replica]]:
    a = Mock("A")
    replicas = [Replica(redis_server.url, NS, replica_id=f"k{i}") for i in range(3)]
    with running(a, *replicas):
        v = publish(redis_server.url, NS, data_for(a, a))
        for r in replicas:
            wait_for(lambda r=r: r.version() == v, timeout=15, what=f"{r.url} at v{v}")
        yield replicas


def keys_rev(r: Replica) -> int:
    return int(httpx.get(r.url + "/status", timeout=2).json()["keys"]["rev"])


def admin_replicas(redis_url: str) -> Replicas:
    """`GET /v1/namespaces/{ns}/replicas` of an admin on this Redis."""

    async def go() -> Replicas:
        async with admin_helpers.client(admin_helpers.app_for(redis_url)) as c:
            r = await c.get(f"/v1/namespaces/{NS}/replicas", headers=admin_helpers.auth("viewer"))
            assert r.status_code == 200, r.text
            return msgspec.json.decode(r.content, type=Replicas)

    return asyncio.run(go())


def acked(redis_url: str) -> dict[str, int]:
    """The key revision each replica reported to Redis (its status)."""

    async def go() -> dict[str, int]:
        redis = aioredis.from_url(redis_url)
        try:
            infos = await Store(redis, NS).replicas()
        finally:
            await redis.aclose()
        return {i.status.replica_id: i.status.keys_rev for i in infos}

    return asyncio.run(go())


async def hammer(urls: list[str], key: str, until: float) -> list[tuple[str, float, float, int]]:
    """Requests with `key` on every replica, 8 at a time each, until `until` (monotonic):
    (replica, sent, answered, status) for each."""
    out: list[tuple[str, float, float, int]] = []
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=5, limits=limits) as http:

        async def loop(url: str) -> None:
            while time.monotonic() < until:
                sent = time.monotonic()
                r = await http.post(
                    url + "/v1/chat/completions",
                    json=CHAT,
                    headers={"authorization": f"Bearer {key}"},
                )
                out.append((url, sent, time.monotonic(), r.status_code))

        await asyncio.gather(*(loop(u) for u in urls for _ in range(8)))
    return out


def test_a_revoked_key_answers_401_on_every_replica_within_100_ms_under_load(
    redis_server: RedisServer, fleet: list[Replica]
) -> None:
    urls = [r.url for r in fleet]

    async def run() -> tuple[float, list[tuple[str, float, float, int]], int]:
        redis = aioredis.from_url(redis_server.url)
        keys = KeyStore(redis, NS)
        entry, key = await keys.create(name="doomed", actor="test")
        assert key is not None
        async with httpx.AsyncClient(timeout=5) as http:  # every replica knows it first
            for u in urls:

                async def served(u: str = u) -> bool:
                    r = await http.post(
                        u + "/v1/chat/completions",
                        json=CHAT,
                        headers={"authorization": f"Bearer {key}"},
                    )
                    return r.status_code == 200

                await eventually(served, timeout=5, what=f"{u} serves the new key")
        load = asyncio.create_task(hammer(urls, key, time.monotonic() + 2.0))
        await asyncio.sleep(1.0)  # under load
        rev = await keys.revoke(entry.id, actor="test")
        revoked_at = time.monotonic()
        results = await load
        await redis.aclose()
        return revoked_at, results, rev

    revoked_at, results, rev = asyncio.run(run())
    before = [r for r in results if r[2] < revoked_at]
    late = [r for r in results if r[1] > revoked_at + REVOKE_BOUND_S]
    assert before and all(s == 200 for *_, s in before)
    assert len(late) > 100 and all(s == 401 for *_, s in late), [r for r in late if r[3] != 401][:5]
    for u in urls:  # each replica got its share of the late requests
        assert any(r[0] == u for r in late)
    for r in fleet:
        assert keys_rev(r) >= rev
    wait_for(
        lambda: [v >= rev for v in acked(redis_server.url).values()] == [True] * 3,
        timeout=5,
        what=f"every replica's status ACKs revision {rev}",
    )
    # The admin's replica view shows the same ACKs.
    rows = admin_replicas(redis_server.url)
    assert sorted(r.keys_rev >= rev for r in rows.replicas) == [True] * 3


def test_a_rotated_key_works_beside_the_new_one_for_its_grace_only(
    redis_server: RedisServer, fleet: list[Replica]
) -> None:
    grace = 2.0

    async def run() -> None:
        redis = aioredis.from_url(redis_server.url)
        keys = KeyStore(redis, NS)
        entry, old = await keys.create(name="rotating", actor="test")
        assert old is not None
        _, new = await keys.rotate(entry.id, grace_s=grace, actor="test")
        rotated_at = time.time()
        await redis.aclose()
        async with httpx.AsyncClient(timeout=5) as http:

            async def status(url: str, key: str) -> int:
                r = await http.post(
                    url + "/v1/chat/completions",
                    json=CHAT,
                    headers={"authorization": f"Bearer {key}"},
                )
                return r.status_code

            for r in fleet:  # wait until each replica holds the rotation

                async def holds(url: str = r.url) -> bool:
                    return await status(url, new) == 200

                await eventually(holds, timeout=5, what=f"{r.url} takes the new key")
            for r in fleet:
                assert await status(r.url, old) == 200  # within the grace period
            assert time.time() < rotated_at + grace, "too slow to check the grace period"
            await asyncio.sleep(max(0.0, rotated_at + grace + 0.05 - time.time()))
            for r in fleet:
                assert await status(r.url, old) == 401
                assert await status(r.url, new) == 200

    asyncio.run(run())
