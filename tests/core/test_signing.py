"""Signed records: a replica skips the semantic checks only for what the admin vouched for."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from configbus.codec import canonical, decode_body, sha256_hex
from configbus.crypto import generate_key
from configbus.document import Document
from configbus.signing import RecordSigner
from configbus.store import Store
from configbus.watcher import Watcher
from tests.core.helpers import body, make_store
from tests.support import RedisServer, eventually


def test_a_signature_verifies_with_any_current_key_and_nothing_else() -> None:
    old, new = generate_key(), generate_key()
    sig = RecordSigner([old]).sign("ab" * 32)
    assert RecordSigner([new, old]).verify("ab" * 32, sig)  # rotated: the old key still reads
    assert not RecordSigner([new]).verify("ab" * 32, sig)
    assert not RecordSigner([old]).verify("cd" * 32, sig)  # another body
    assert not RecordSigner([old]).verify("ab" * 32, "")


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as s:
        yield s


async def test_a_replica_checks_references_unless_the_admin_signed_the_body(
    redis_server: RedisServer, namespace: str, stack: AsyncExitStack
) -> None:
    key = generate_key()
    signer = RecordSigner([key])
    pub = make_store(redis_server.url, namespace)
    stack.push_async_callback(pub.redis.aclose)
    full: list[int] = []
    cheap: list[int] = []

    def decode(b: bytes) -> Document:
        full.append(1)
        return decode_body(b)

    def decode_signed(b: bytes) -> Document:
        cheap.append(1)
        return decode_body(b, semantic=False)

    store = make_store(redis_server.url, namespace)
    stack.push_async_callback(store.redis.aclose)
    w: Watcher[Document, Document] = Watcher(
        store, decode=decode, signer=signer, decode_signed=decode_signed
    )
    good = body(1)
    await pub.publish(good, sig=signer.sign(sha256_hex(good)))
    await stack.enter_async_context(w)
    await eventually(lambda: w.current is not None and w.current.version == 1, timeout=5)
    assert (len(full), len(cheap)) == (0, 1)
    record = await pub.get(1)
    assert record.sig and signer.verify(record.sha256, record.sig)

    # A body that bypassed the admin, with a signature copied from a good one: checked in
    # full, and refused for its dangling reference.
    bad = canonical(decode_body(body(2))).replace(b'"provider":"upstream-a"', b'"provider":"x"')
    await pub.publish(bad, sig=record.sig)
    await eventually(lambda: w.status().state == "rejected", timeout=5, what="the NACK")
    assert "unknown provider 'x'" in (w.status().reason or "")
    assert w.current is not None and w.current.version == 1
    # Unsigned (an older admin, or none with keys): the full checks, and it applies.
    await pub.publish(body(3))
    await eventually(lambda: w.current is not None and w.current.version == 3, timeout=5)
    assert (len(full), len(cheap)) == (2, 1)


async def test_a_rollback_carries_a_signature(redis_server: RedisServer, namespace: str) -> None:
    store: Store = make_store(redis_server.url, namespace)
    try:
        signer = RecordSigner([generate_key()])
        b1 = body(1)
        await store.publish(b1, sig=signer.sign(sha256_hex(b1)))
        await store.publish(body(2))
        r = await store.rollback(1)
        rec = await store.get(r.version)
        assert signer.verify(rec.sha256, rec.sig)
        with pytest.raises(ValueError):
            await store.publish(body(9), sig="not hex")
    finally:
        await store.redis.aclose()
