from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from configbus.clientkeys import parse_key_hint
from configbus.keystore import KeyConflict, KeyStore, hash_key
from tests.support import RedisServer


@pytest.fixture
async def keys(redis_server: RedisServer, namespace: str) -> AsyncIterator[KeyStore]:
    r = aioredis.from_url(redis_server.url)
    yield KeyStore(r, namespace, log_cap=5)
    await r.aclose()


async def test_create_returns_the_key_once_and_stores_only_its_hash(keys: KeyStore) -> None:
    entry, key = await keys.create(name="alice", team="ml", actor="admin")
    assert key is not None and key.startswith("sk-cb-")
    assert entry.key_sha256 == hash_key(key) and entry.revision == 1
    raw = await keys.redis.hget(keys.layout.entries, entry.id)
    assert key.encode() not in raw and raw.startswith(b'{"revision":1,')
    assert (await keys.find(hash_key(key))) == entry
    assert (await keys.state()).rev == 1


async def test_a_hash_belongs_to_one_entry(keys: KeyStore) -> None:
    await keys.create(name="a", key_sha256="a" * 64)
    with pytest.raises(KeyConflict) as exc:
        await keys.create(name="b", key_sha256="a" * 64)
    assert exc.value.reason == "hash_taken"
    with pytest.raises(KeyConflict):
        await keys.create(name="c", key_sha256="c" * 64, reserved={"c" * 64})
    assert (await keys.state()).rev == 1  # refusals change nothing


async def test_changes_are_logged_in_order_and_a_gap_asks_for_a_reload(keys: KeyStore) -> None:
    e, _ = await keys.create(name="a")
    e2 = await keys.update(e.id, expected=e.revision, tags=("x",))
    with pytest.raises(KeyConflict) as exc:
        await keys.update(e.id, expected=e.revision, tags=("y",))
    assert exc.value.reason == "conflict"
    rev = await keys.revoke(e.id)
    state, changes = await keys.changes_since(0)
    assert state.rev == rev == 3 and changes is not None
    assert [c.rev for c in changes] == [1, 2, 3]
    assert changes[1].entry == e2 and changes[2].entry is None
    for _ in range(6):
        await keys.create(name="more")
    _, changes = await keys.changes_since(0)  # the log holds 5: revision 1 is gone
    assert changes is None
    _, changes = await keys.changes_since(7)
    assert changes is not None and [c.rev for c in changes] == [8, 9]


async def test_rotation_keeps_the_old_hash_for_its_grace_only(keys: KeyStore) -> None:
    e, old = await keys.create(name="a")
    assert old is not None
    rotated, new = await keys.rotate(e.id, grace_s=60)
    assert rotated.usable(hash_key(new), rotated.updated_at)
    assert rotated.usable(hash_key(old), rotated.updated_at + 59)
    assert not rotated.usable(hash_key(old), rotated.updated_at + 61)
    assert (await keys.find(hash_key(old))) == rotated  # hash index still maps it
    again, newest = await keys.rotate(e.id, grace_s=0)
    assert await keys.find(hash_key(old)) is None
    assert await keys.find(hash_key(new)) is None
    assert (await keys.find(hash_key(newest))) == again


async def test_each_change_hints_its_change(keys: KeyStore) -> None:
    pubsub = keys.redis.pubsub()
    await pubsub.subscribe(keys.layout.changes)
    e, _ = await keys.create(name="a")
    async with asyncio.timeout(5):
        while True:
            msg = await pubsub.get_message(timeout=1)
            if msg and msg["type"] == "message":
                break
    hint, change = parse_key_hint(msg["data"])
    assert hint.rev == 1 and change is not None and change.entry == e
    await pubsub.aclose()
