from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from configbus.codec import canonical, sha256_hex
from configbus.connection import connect
from configbus.crypto import SecretBox, encrypt_secrets
from configbus.store import Store
from configbus.testing import sample_data
from configbus.validation import to_document


def body(n: int = 0, *, box: SecretBox | None = None, pad: int = 0, **kw: Any) -> bytes:
    """A valid canonical body that differs per `n` (via metadata)."""
    data = sample_data(**kw)
    data["metadata"] = {"n": n, **({"pad": "x" * pad} if pad else {})}
    doc = to_document(data)
    if box is not None:
        doc = encrypt_secrets(doc, box)
    else:
        data["providers"][0].pop("api_key")
        doc = to_document(data)
    return canonical(doc)


def make_store(url: str, namespace: str, **kw: Any) -> Store:
    return Store(connect(url), namespace, **kw)


async def close(redis: aioredis.Redis) -> None:
    await redis.aclose()


async def forge_head(
    store: Store, version: int, body_: bytes, *, sha256: str | None = None
) -> None:
    """Write a record and move head to it behind the store's back (no script, no message),
    as a buggy or malicious writer would. `sha256` defaults to the body's real digest."""
    epoch = (await store.head()).epoch
    assert epoch is not None
    await store.redis.hset(
        store.keys.record(version),
        mapping={
            "version": version, "parent": version - 1, "epoch": epoch,
            "sha256": sha256 or sha256_hex(body_), "author": "forger", "message": "",
            "created_at": 0, "kind": "publish", "source": "", "body": body_,
        },
    )  # fmt: skip
    await store.redis.set(store.keys.head, version)
