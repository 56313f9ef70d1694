"""Bad records written straight into Redis as the new head, as a buggy or hostile writer
would, with the change hint: the replicas must refuse them and keep serving."""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

from bench.chaos.documents import canonical_body, document, invalid_body
from bench.chaos.invariants import Version
from bench.chaos.processes import KEYS, Fleet
from configbus.codec import sha256_hex

KINDS = ("invalid", "checksum", "unreadable")


def _bad_record(fleet: Fleet, kind: str) -> tuple[bytes, str]:
    """(body, sha256) of a record of `kind`: fails validation / its checksum / lacks fields."""
    good = canonical_body(document(0, fleet.mock_a.url, fleet.mock_b.url))
    if kind == "invalid":
        body = invalid_body(fleet.mock_a.url, fleet.mock_b.url)
        return body, sha256_hex(body)
    if kind == "checksum":
        return good, sha256_hex(good + b" ")
    return good, sha256_hex(good)  # "unreadable": fields are dropped below


async def inject(fleet: Fleet, kind: str) -> Version:
    """Write a bad record of `kind` as head (next version of the store); returns it."""
    assert kind in KINDS, kind
    body, sha = _bad_record(fleet, kind)
    async with fleet.r.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(KEYS + "head", KEYS + "epoch", KEYS + "seq")
                head = int(await pipe.get(KEYS + "head") or 0)
                epoch = (await pipe.get(KEYS + "epoch")).decode()
                seq = int(await pipe.get(KEYS + "seq") or 0)
                version = max(seq, head) + 1
                fields: dict[str, Any] = {
                    "version": version, "parent": head, "epoch": epoch, "sha256": sha,
                    "author": "chaos-injector", "message": f"chaos inject {kind}",
                    "created_at": f"{time.time():.6f}", "kind": "publish", "source": "",
                    "body": body,
                }  # fmt: skip
                if kind == "unreadable":
                    del fields["body"], fields["created_at"]
                pipe.multi()
                pipe.set(KEYS + "seq", version)
                pipe.hset(KEYS + f"v:{version}", mapping=fields)
                pipe.set(KEYS + "head", version)
                pipe.zadd(KEYS + "history", {str(version): version})
                hint = {"version": version, "sha256": sha, "epoch": epoch}
                pipe.publish(KEYS + "changes", json.dumps(hint))
                await pipe.execute()
                return epoch, version
            except aioredis.WatchError:
                continue
