"""What makes a publish survive a Redis failover.

Redis replicates asynchronously: a primary that dies may take its last writes with it, and
Sentinel promotes a replica that never saw them. Two things follow.

- `min_replicas_to_ack`: after the publish script, `WAIT n timeout` on the same connection
  (WAIT counts the replicas that acknowledged *this connection's* writes, so the script and
  the WAIT go in one pipeline). Fewer acks answer `NotReplicated`: the version exists on
  the primary, but the caller is told it may not survive a failover yet.
- a version lost that way may already run on proxy replicas, which report it in their
  status (`cb:{ns}:replicas`, rewritten at every heartbeat, so a new primary learns it again
  within a heartbeat). `FLOOR` moves the version counter above every version a replica of
  the current epoch reports, before the publish script runs: the next version is numbered
  above anything a replica has seen, so those replicas follow it instead of thinking they
  already hold something newer.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

DEFAULT_ACK_TIMEOUT_MS = 500

# KEYS: seq, epoch, replicas. Raises seq to the highest version a replica of the current
# epoch reports; returns that version (0 when none). A status that does not decode is
# skipped: the admin's replica list reports it.
FLOOR = """
local epoch = redis.call('GET', KEYS[2])
if not epoch then return 0 end
local top = 0
for _, raw in ipairs(redis.call('HVALS', KEYS[3])) do
  local ok, st = pcall(cjson.decode, raw)
  if ok and type(st) == 'table' and st['epoch'] == epoch then
    local v = tonumber(st['version'])
    if v and v > top and v < 9007199254740992 then top = v end
  end
end
local seq = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if top > seq then redis.call('SET', KEYS[1], string.format('%d', top)) end
return top
"""


async def run_publish(
    redis: aioredis.Redis,
    *,
    floor: AsyncScript,
    floor_keys: list[str],
    publish: AsyncScript,
    keys: list[str],
    args: list[Any],
    min_replicas: int,
    timeout_ms: int,
) -> tuple[Any, int | None]:
    """The publish script's reply, after FLOOR; with `min_replicas`, also how many replicas
    acknowledged it (WAIT), else None."""
    if not hasattr(redis, "connection_pool"):
        # A cluster client routes each script to the namespace's slot on its own.
        await floor(keys=floor_keys, client=redis)
        return await publish(keys=keys, args=args, client=redis), None
    async with redis.pipeline(transaction=False) as pipe:
        await floor(keys=floor_keys, client=pipe)
        await publish(keys=keys, args=args, client=pipe)
        if min_replicas:
            pipe.execute_command("WAIT", min_replicas, timeout_ms)
        replies = await pipe.execute()
    return replies[1], (int(replies[2]) if min_replicas else None)


async def wait_again(
    redis: aioredis.Redis, key: str, ttl_s: int, *, min_replicas: int, timeout_ms: int
) -> int:
    """How many replicas hold everything up to now, for a publish answered from its
    idempotency key (nothing written on this connection: WAIT would count nothing). The
    key's expiry is set again, a harmless write, and WAIT waits for it: replication is in
    order, so a replica that has it has the first call's version too."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.expire(key, ttl_s)
        pipe.execute_command("WAIT", min_replicas, timeout_ms)
        _, acked = await pipe.execute()
    return int(acked)
