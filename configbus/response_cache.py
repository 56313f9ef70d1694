"""Cached responses of a namespace in Redis: the storage side of the replicas' response cache.

    cb:{ns}:cache:<sha256>   a cached answer (opaque bytes), expiring after its TTL

Under the namespace's hash tag, like every key of the namespace. What goes into the digest
and the value is the proxy's business (`proxy.cache`); a replica reads and writes through a
connection of its own with a short timeout, and treats any Redis error as a miss.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from configbus.names import check_namespace


class ResponseStore:
    """Get and put cached answers by digest."""

    def __init__(self, redis: aioredis.Redis, namespace: str) -> None:
        self._redis = redis
        self.prefix = f"cb:{{{check_namespace(namespace)}}}:cache:"

    def key(self, digest: str) -> str:
        return self.prefix + digest

    async def get(self, digest: str) -> bytes | None:
        value = await self._redis.get(self.prefix + digest)
        return value if value is None or isinstance(value, bytes) else value.encode()

    async def put(self, digest: str, value: bytes, ttl_s: int) -> None:
        await self._redis.set(self.prefix + digest, value, ex=ttl_s)
