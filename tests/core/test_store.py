from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from configbus.crypto import SecretBox, generate_key
from configbus.errors import IdempotencyMismatch, StoreError, VersionConflict, VersionNotFound
from configbus.store import Store
from tests.core.helpers import body, make_store
from tests.support import RedisServer


@pytest.fixture
async def store(redis_server: RedisServer, namespace: str) -> AsyncIterator[Store]:
    s = make_store(redis_server.url, namespace)
    yield s
    await s.redis.aclose()


async def test_first_publish_creates_version_one_and_an_epoch(store: Store) -> None:
    r = await store.publish(body(1), author="alice", message="first")
    assert (r.version, r.outcome) == (1, "created")
    head = await store.head()
    assert head.version == 1 and head.epoch == r.epoch
    rec = await store.get(1)
    rec.verify()
    assert (rec.author, rec.message, rec.kind, rec.parent) == ("alice", "first", "publish", 0)


async def test_two_publishers_on_same_base_exactly_one_wins(store: Store) -> None:
    await store.publish(body(0))
    results = await asyncio.gather(
        *(store.publish(body(i + 1), expected_version=1) for i in range(10)),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    conflicts = [r for r in results if isinstance(r, VersionConflict)]
    assert len(wins) == 1 and wins[0].version == 2
    assert len(conflicts) == 9
    assert all(c.current == 2 and "current version is 2" in str(c) for c in conflicts)
    assert (await store.head()).version == 2


async def test_retried_publish_with_idempotency_key_makes_one_version(store: Store) -> None:
    first = await store.publish(body(1), idempotency_key="req-1")
    again = await store.publish(body(1), idempotency_key="req-1", expected_version=0)
    assert first.version == again.version == 1
    assert again.outcome == "idempotent"
    assert (await store.head()).version == 1
    with pytest.raises(IdempotencyMismatch, match="req-1"):
        await store.publish(body(2), idempotency_key="req-1")


async def test_identical_body_is_a_noop(store: Store) -> None:
    await store.publish(body(1))
    r = await store.publish(body(1))
    assert (r.version, r.outcome) == (1, "noop")
    assert [m.version for m in await store.versions()] == [1]


async def test_rollback_is_a_new_version_with_the_old_body(store: Store) -> None:
    for i in range(3):
        await store.publish(body(i))
    r = await store.rollback(1, author="sre", message="bad deploy")
    assert r.version == 4
    rec = await store.get(4)
    assert rec.body == (await store.get(1)).body
    assert (rec.kind, rec.source, rec.parent) == ("rollback", 1, 3)
    with pytest.raises(VersionNotFound):
        await store.rollback(99)


async def test_retention_trims_old_versions_but_never_head(
    redis_server: RedisServer, namespace: str
) -> None:
    store = make_store(redis_server.url, namespace, retention=1)
    try:
        for i in range(5):
            await store.publish(body(i))
        assert [m.version for m in await store.versions()] == [5]
        (await store.get(5)).verify()
        with pytest.raises(VersionNotFound):
            await store.get(4)
        # Rolling back to head's own body is a no-op, and head still stands.
        r = await store.rollback(5)
        assert r.outcome == "noop" and (await store.head()).version == 5
    finally:
        await store.redis.aclose()


async def test_versions_paginate_newest_first(store: Store) -> None:
    for i in range(7):
        await store.publish(body(i), message=f"m{i}")
    page1 = await store.versions(limit=3)
    page2 = await store.versions(limit=3, before=page1[-1].version)
    assert [m.version for m in page1] == [7, 6, 5]
    assert [m.version for m in page2] == [4, 3, 2]
    assert page1[0].message == "m6"


async def test_every_publish_outcome_is_audited(store: Store) -> None:
    await store.publish(body(1), author="alice")
    await store.publish(body(1), author="alice")
    with pytest.raises(VersionConflict):
        await store.publish(body(2), author="bob", expected_version=0)
    await store.audit("login", "carol", "denied", reason="bad token")
    entries = await store.audit_entries()
    assert [(e.actor, e.action, e.outcome) for e in entries] == [
        ("carol", "login", "denied"),
        ("bob", "publish", "conflict"),
        ("alice", "publish", "noop"),
        ("alice", "publish", "created"),
    ]


async def test_export_then_import_reseeds_an_empty_store(
    redis_server: RedisServer, namespace: str
) -> None:
    src = make_store(redis_server.url, namespace)
    dst = make_store(redis_server.url, namespace + "-copy")
    try:
        for i in range(3):
            await src.publish(body(i))
        data = await src.export()
        assert await dst.import_(data, actor="admin") == 3
        src_head, dst_head = await src.head(), await dst.head()
        assert (dst_head.version, dst_head.sha256) == (src_head.version, src_head.sha256)
        assert dst_head.epoch != src_head.epoch  # a re-seeded store is a new lineage
        assert (await dst.get(2)).body == (await src.get(2)).body
        assert (await dst.get(2)).epoch == dst_head.epoch
        # The next publish continues the numbering.
        assert (await dst.publish(body(9))).version == 4
        with pytest.raises(StoreError, match="already has version 4"):
            await dst.import_(data)
    finally:
        await src.redis.aclose()
        await dst.redis.aclose()


async def test_no_plaintext_secret_anywhere_in_redis(
    redis_server: RedisServer, namespace: str
) -> None:
    box = SecretBox([generate_key()])
    secrets = [f"sk-live-{i}-7d2f9a" for i in range(3)]
    store = make_store(redis_server.url, namespace)
    try:
        for i, secret in enumerate(secrets):
            await store.publish(body(i, box=box, api_key=secret))
        await store.rollback(1)
        raw = redis_server.client()
        try:
            dumped = []
            for key in raw.scan_iter(match="*"):
                dumped.append(key)
                kind = raw.type(key)
                if kind == b"string":
                    dumped.append(raw.get(key) or b"")
                elif kind == b"hash":
                    for k, v in raw.hgetall(key).items():
                        dumped += [k, v]
                elif kind == b"zset":
                    dumped += [m for m, _ in raw.zrange(key, 0, -1, withscores=True)]
                elif kind == b"stream":
                    for _, fields in raw.xrange(key):
                        for k, v in fields.items():
                            dumped += [k, v]
            blob = b"\n".join(dumped)
        finally:
            raw.close()
        assert b"gAAAA" in blob  # the secrets are there, encrypted
        for secret in secrets:
            assert secret.encode() not in blob
    finally:
        await store.redis.aclose()


@pytest.mark.parametrize(
    "exc",
    [
        __import__("redis").exceptions.RedisClusterException("cluster down"),
        __import__("redis").exceptions.ReadOnlyError("READONLY after failover"),
        __import__("redis").exceptions.BusyLoadingError("LOADING"),
        ConnectionRefusedError(111, "refused"),
    ],
)
def test_redis_that_cannot_serve_is_unavailable_not_an_error(exc: BaseException) -> None:
    from configbus.errors import StoreUnavailable
    from configbus.redis_calls import store_error

    assert isinstance(store_error(exc, "publish"), StoreUnavailable)


async def test_cluster_client_with_cluster_down_is_unavailable() -> None:
    from configbus.connection import connect
    from configbus.errors import StoreUnavailable
    from tests.support import free_port

    store = Store(connect(f"redis://127.0.0.1:{free_port()}/0?cluster=true"), "down")
    try:
        with pytest.raises(StoreUnavailable):
            await store.fetch_head()
    finally:
        await store.redis.aclose()
