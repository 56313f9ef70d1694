"""What makes a publish survive a Redis failover.

Redis replicates asynchronously: a primary that dies may take its last writes with it, and
Sentinel promotes a replica that never saw them. Two things follow.

- `min_replicas_to_ack`: after the publish script, `WAIT n timeout` on the same connection
  (WAIT counts the replicas that acknowledged *this connection's* writes, so the script and
  the WAIT go in one pipeline). Fewer acks answer `NotReplicated`: the version exists on
  the primary, but the caller is told it may not survive a failover yet.
- a version lost that way may already run on proxy replicas, which report it in their
  status (`cb:{ns}:replicas`, rewritten at every heartbeat, so a new primary learns it again
  within a heartbeat). The publish script numbers a new version above every version a
  replica of the current epoch reports (`REPORTED_TOP`: each report also raises its
  lineage's highest reported version, `cb:{ns}:reported`): above anything a replica has
  seen, so those replicas follow it instead of thinking they already hold something newer.
- `FENCE_FN`: that floor alone is not enough right after a failover. The reports of a lost version
  went to the old primary and were lost with it; the new primary holds the replicas'
  statuses as they were when it last synced, so the first publishes there took numbers
  replicas had already run (the failover test found it in every run once it compared
  checksums). So the first time a publish runs on a server the namespace was not last
  published on (its `run_id`, new after a restart too, which can lose writes as well), the
  live replicas' statuses are fenced (for a restart only those reported before the server's
  process started; for a promoted replica, whose copy got the old primary's writes until a
  promotion Redis does not date, all of them), and
  publishes wait, at most `DEFAULT_FAILOVER_WAIT_S`, until each fenced replica has
  reported to this server again or stopped being alive. Replicas report as soon as they
  reach a new server (a failed report is retried soon; a resubscribe reports at once), so
  the wait is short, except that a replica that reached the new primary before the first
  publish there must report once more (up to a heartbeat). A replica that cannot reach it
  within the wait may keep a number that is then reused: the admin logs a warning.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

log = logging.getLogger("configbus.store")

DEFAULT_ACK_TIMEOUT_MS = 500
DEFAULT_FAILOVER_WAIT_S = 3.0
FENCE_POLL_S = 0.02

# A Lua function for the publish script (`configbus.lua.PUBLISH`): the highest version a
# replica of `epoch` reports (0 when none); the new version is numbered above it. A replica's
# report raises its lineage's mark in the ZSET `reported` (`Store.report_at`: ZADD GT, in
# the same write as the status and before it), so a publish reads one score instead of every
# status: scanning them cost about 1.7 ms of Redis per publish at 1,000 replicas, blocking
# every client meanwhile. The mark only rises; a replica forgotten since still counts, which
# only skips numbers. With no mark for the lineage (replicas of a release before the mark
# report only their status; or nobody reported yet) or an unreadable one, the statuses in
# the hash `replicas` are read, each by position instead of decoded: a report is
# `{"last_seen":..,"replica_id":..,"state":..,"version":N,"epoch":"E",...}`
# (`Store.report_at`, the field order of `ReplicaStatus`), and no `,"version":` can occur
# inside the JSON strings before it. A status of another shape is skipped: the admin's
# replica list reports it.
REPORTED_TOP = """
local function reported_top(epoch, reported, replicas)
  local ok, mark = pcall(redis.call, 'ZSCORE', reported, epoch)
  mark = ok and tonumber(mark)
  if mark and mark >= 0 and mark < 9007199254740992 then return math.floor(mark) end
  local top = 0
  local tail = ',"epoch":"' .. epoch .. '"'
  for _, raw in ipairs(redis.call('HVALS', replicas)) do
    -- Positions only (no captured strings) until a status is of this epoch.
    local _, at = string.find(raw, ',"version":', 1, true)
    local first, last = nil, nil
    if at then first, last = string.find(raw, '^%d+', at + 1) end
    if last and string.find(raw, tail, last + 1, true) == last + 1 then
      local v = tonumber(string.sub(raw, first, last))
      if v > top and v < 9007199254740992 then top = v end
    end
  end
  return top
end
"""


# A Lua function: fence(epoch, replicas, server, fence keys, TIME's reply), where `server` holds the
# run_id of the server the namespace was last published on and `fence` maps replica id ->
# sha1 of the status it had when this server took over. Returns the replicas still to report
# to this server and the ms until the last of them is dead. No epoch (nothing to protect)
# or no INFO (an ACL without +info, a fake Redis): 0, 0. The publish script calls it first
# (one atomic step: nothing is numbered between the check and the publish); `FENCE` runs it
# alone, to poll while a publish waits.
FENCE_FN = """
local function fence(epoch, replicas, server_key, fence_key, t)
  if not epoch then return 0, 0 end
  local ok, info = pcall(redis.call, 'INFO', 'server')
  if not ok or type(info) ~= 'string' then return 0, 0 end
  local at = string.find(info, 'run_id:', 1, true)
  local me = at and string.match(info, '^%x+', at + 7)
  if not me then return 0, 0 end
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  -- A status's last report and the time it stays alive until; nil when unreadable or dead.
  local function times(raw)
    local ok2, st = pcall(cjson.decode, raw)
    if not ok2 or type(st) ~= 'table' then return nil end
    local seen, ttl = tonumber(st['last_seen']), tonumber(st['ttl_s'] or 15)
    if not seen or not ttl or now - seen > ttl then return nil end
    return seen, seen + ttl
  end
  local server = redis.call('GET', server_key)
  if server ~= me then
    -- A server that was not promoted since it started (no second replication id) has had
    -- no writes but its own since then: reports since its start reached it, no wait for
    -- those (a restart). A promoted one got the old primary's writes until the promotion,
    -- which Redis does not date: every live replica is waited for.
    local started = now
    local ok3, repl = pcall(redis.call, 'INFO', 'replication')
    if ok3 and type(repl) == 'string' and string.match(repl, 'second_repl_offset:%-1') then
      started = now - (tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or 0)
    end
    redis.call('SET', server_key, me)
    redis.call('DEL', fence_key)
    if server then
      -- Published on another server before: every live replica must report here again.
      local all = redis.call('HGETALL', replicas)
      for i = 1, #all, 2 do
        local seen = times(all[i + 1])
        if seen and seen < started then
          redis.call('HSET', fence_key, all[i], redis.sha1hex(all[i + 1]))
        end
      end
    end
  end
  local pending, last = 0, now
  local fenced = redis.call('HGETALL', fence_key)
  for i = 1, #fenced, 2 do
    local raw = redis.call('HGET', replicas, fenced[i])
    local seen, untl = nil, nil
    if raw and redis.sha1hex(raw) == fenced[i + 1] then seen, untl = times(raw) end
    if untl then
      pending = pending + 1
      if untl > last then last = untl end
    else
      redis.call('HDEL', fence_key, fenced[i])
    end
  end
  return pending, math.floor((last - now) * 1000)
end
"""

# KEYS: epoch, replicas, server, fence. Returns {pending, ms until the last is dead}.
FENCE = FENCE_FN + (
    "return {fence(redis.call('GET', KEYS[1]), KEYS[2], KEYS[3], KEYS[4], redis.call('TIME'))}"
)


async def await_reports(
    fence: AsyncScript, keys: list[str], client: aioredis.Redis, wait_s: float
) -> None:
    """Wait (at most `wait_s`) until every live replica has reported to this server since
    the namespace was first published on it (see FENCE_FN)."""
    pending, left_ms = await fence(keys=keys, client=client)
    if not pending:
        return
    started = time.monotonic()
    deadline = started + min(wait_s, left_ms / 1000)
    while pending and time.monotonic() < deadline:
        await asyncio.sleep(FENCE_POLL_S)
        pending, _ = await fence(keys=keys, client=client)
    took = time.monotonic() - started
    if pending:
        log.warning(
            "publish on a new server (a failover or a restart): %d replica(s) alive before it did "
            "not report to it again within %.1fs; if one of them ran a version the old server "
            "lost, its number may be reused",
            pending,
            took,
        )
    else:
        log.info("publish after a failover waited %.3fs for the replicas' reports", took)


async def run_publish(
    redis: aioredis.Redis,
    *,
    publish: AsyncScript,
    keys: list[str],
    args: list[Any],
    fence: AsyncScript,
    fence_keys: list[str],
    wait_s: float,
    min_replicas: int,
    timeout_ms: int,
) -> tuple[Any, int | None]:
    """The publish script's reply; with `min_replicas`, also how many replicas acknowledged
    it (WAIT), else None. `args` are the script's, but for the last: whether it checks the
    fence itself. It does, in the same step, unless it would run beside a WAIT (a fenced
    answer must not wait for acks); once fenced, the publish waits for the replicas'
    reports (`await_reports`), then runs without the check."""
    if not min_replicas or not hasattr(redis, "connection_pool"):
        # One round trip (a cluster client routes the script to the namespace's slot).
        reply = await publish(keys=keys, args=[*args, "1"], client=redis)
        if reply[0] not in (b"fenced", "fenced"):
            return reply, None
        await await_reports(fence, fence_keys, redis, wait_s)
        return await publish(keys=keys, args=[*args, "0"], client=redis), None
    await await_reports(fence, fence_keys, redis, wait_s)
    async with redis.pipeline(transaction=False) as pipe:
        await publish(keys=keys, args=[*args, "0"], client=pipe)
        pipe.execute_command("WAIT", min_replicas, timeout_ms)
        replies = await pipe.execute()
    return replies[0], int(replies[1])


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
