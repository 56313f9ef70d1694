"""Fleet counters: hits counted in Redis, so every process counting a key shares one count.

Two Lua scripts, one connection each (`ScriptCaller`):

- `FIXED_WINDOW` (`FleetCounter`) counts a batch of hits in fixed windows, one round trip
  per batch: the admin's publish limit.
- `TOKEN_BUCKET_LEASE` (`LeaseCaller`) hands out allowances from token buckets in batches:
  a replica leases a few tokens of each bucket at a time and admits requests from them
  locally, so no request waits on Redis (`proxy.limits`).

FIXED_WINDOW: each hit INCRements its key, and
the first hit of a window sets the key's expiry, so a window starts at its key's first hit
and the key vanishes when it ends. Each hit answers a `Tally`: (hits so far in the window,
ms until the window ends). The admin's publish limit and the proxy's client limits are
such windows; the caller decides what a count means.

Keys (`counter_key`) sit under a hash tag, `cb:{<scope>}:rl:<kind>:<name>`: the scope is
the namespace, so a Redis Cluster keeps its counters on the namespace's slot, or `_` for
counters outside any namespace (no namespace can be named so). One counter's keys must
share a slot, since one script call counts a whole batch of them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from configbus.errors import StoreUnavailable
from configbus.redis_calls import REDIS_ERRORS, store_error

log = logging.getLogger("configbus.counters")

Tally = tuple[int, int]
"""(hits so far in the window, including this one; ms until the window ends)"""

# KEYS: one per hit (a key may repeat: each occurrence is one hit); ARGV: window ms.
# Returns {count, ttl_ms} per key, flattened, in KEYS order.
FIXED_WINDOW = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('PEXPIRE', key, ARGV[1])
    ttl = tonumber(ARGV[1])
  end
  out[2 * i - 1] = n
  out[2 * i] = ttl
end
return out
"""

# KEYS[1]: the live-replica set; KEYS[2..]: token buckets (hashes: tokens, ts).
# ARGV[1]: replica id; ARGV[2]: live ttl ms; then per bucket: want, give back, rate (tokens
# per ms), capacity. A bucket refills at its rate up to its capacity from Redis's clock;
# a missing bucket is full; a key of another type (an older replica's window) is replaced.
# Returns {live replicas, then per bucket: granted, tokens left (floored), ms until one}.
TOKEN_BUCKET_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
local out = {redis.call('ZCARD', KEYS[1])}
for i = 2, #KEYS do
  local a = 3 + (i - 2) * 4
  local want, back = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local rate, cap = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local key = KEYS[i]
  local tokens, ts = cap, now
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'hash' then
    local v = redis.call('HMGET', key, 'tokens', 'ts')
    if v[1] and v[2] then tokens, ts = tonumber(v[1]), tonumber(v[2]) end
  elseif kind ~= 'none' then
    redis.call('DEL', key)
  end
  if now > ts then tokens = tokens + (now - ts) * rate end
  tokens = math.min(cap, tokens + back)
  local grant = math.max(0, math.min(want, math.floor(tokens)))
  tokens = tokens - grant
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(cap / rate) + 1000)
  local wait = 0
  if tokens < 1 then wait = math.ceil((1 - tokens) / rate) end
  out[#out + 1] = grant
  out[#out + 1] = math.floor(tokens)
  out[#out + 1] = wait
end
return out
"""

_Pending = list[tuple[str, "asyncio.Future[Tally | None]"]]


# The scope of counters outside any namespace: the namespace rule refuses this name.
GLOBAL_SCOPE = "_"


def counter_key(kind: str, name: str, *, namespace: str = GLOBAL_SCOPE) -> str:
    """The Redis key counting `name` (a client, a token...) of `kind`."""
    return f"cb:{{{namespace}}}:rl:{kind}:{name}"


class ScriptCaller:
    """One Lua script over one dedicated connection, made from the client's pool settings
    (so AUTH, TLS and unix sockets work), the script loaded once (again after a restart).
    On a cluster client, the script object routes each call to the node of its keys' slot.
    A call that takes longer than `timeout_s` fails with TimeoutError and drops the
    connection, since a late reply would be read as the next call's."""

    def __init__(self, redis: aioredis.Redis, script: str, *, timeout_s: float) -> None:
        self.redis = redis
        self.script = script
        self.timeout_s = timeout_s
        self._sha: str | None = None
        self._conn: Any = None
        self._cluster_script: Any = None

    async def _command(self, *args: Any) -> Any:
        conn: Any = self._conn
        if conn is None:
            pool = self.redis.connection_pool
            # Timeouts are applied per call below; no per-write wait_for inside redis-py.
            conn = self._conn = pool.connection_class(
                **{**pool.connection_kwargs, "socket_timeout": None}
            )
            # The handshake (HELLO, AUTH, SELECT) reads replies too: bound it, or a Redis that
            # accepts connections but does not answer (paused) would hold every hit queued.
            # Any failure drops the connection (reset), so a kept one is always connected.
            async with asyncio.timeout(self.timeout_s):
                await conn.connect()
        await conn.send_packed_command(conn.pack_command(*args), check_health=False)
        reply = await conn.read_response(timeout=self.timeout_s)
        if reply is None:
            # redis-py answers None (not an error) when a caller-given read timeout expires,
            # and keeps the connection: the late reply would be read as the next call's.
            # Our replies are never nil, so None means "timed out"; the caller drops the stream.
            raise TimeoutError(f"no reply from Redis in {self.timeout_s}s")
        return reply

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        """Run the script; on any error the connection is dropped before it propagates."""
        try:
            return await self._call(keys, args)
        except BaseException:
            await self.reset()
            raise

    async def _call(self, keys: list[str], args: list[Any]) -> Any:
        if not hasattr(self.redis, "connection_pool"):
            if self._cluster_script is None:
                self._cluster_script = self.redis.register_script(self.script)
            async with asyncio.timeout(self.timeout_s):
                return await self._cluster_script(keys=keys, args=args)
        if self._sha is None:
            self._sha = await self._command("SCRIPT", "LOAD", self.script)
        try:
            return await self._command("EVALSHA", self._sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis restarted empty: load the script again (one extra round trip, once).
            self._sha = await self._command("SCRIPT", "LOAD", self.script)
            return await self._command("EVALSHA", self._sha, len(keys), *keys, *args)

    async def reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.disconnect(nowait=True)
            except Exception:  # already broken; nothing more to do
                log.debug("fleet counter: disconnect failed", exc_info=True)


class FleetCounter:
    """Fixed-window counters in Redis, `window_s` long, shared by every process.

    At most one script call in flight: hits that arrive while a call is out go together in
    the next call. At low load a hit costs one round trip with no extra hop; under load one
    call serves a whole batch. A call that takes longer than `timeout_s` fails; every
    failure is a `StoreError` (`StoreUnavailable` when Redis cannot serve), raised to each
    hit of the batch.
    """

    def __init__(self, redis: aioredis.Redis, *, window_s: float, timeout_s: float) -> None:
        self.redis = redis
        self.window_ms = int(window_s * 1000)
        self.timeout_s = timeout_s
        self._script = ScriptCaller(redis, FIXED_WINDOW, timeout_s=timeout_s)
        self._pending: _Pending = []
        self._sending = False
        self._failure: BaseException = ConnectionError("no call yet")
        self._tasks: set[asyncio.Task[None]] = set()

    async def count(self, key: str) -> Tally:
        """Count one hit on `key`; StoreUnavailable after `timeout_s` without an answer, from
        the hit's arrival (queued behind a call already out, it would else wait for that
        call and then its own: twice the time a caller was promised)."""
        fut: asyncio.Future[Tally | None] = asyncio.get_running_loop().create_future()
        self._pending.append((key, fut))
        try:
            async with asyncio.timeout(self.timeout_s):
                if not self._sending:
                    await self._pump()
                tally = await fut
        except TimeoutError:
            raise StoreUnavailable(
                f"fleet counter: no answer from Redis in {self.timeout_s}s"
            ) from None
        if tally is None:
            raise store_error(self._failure, "fleet counter") from None
        return tally

    async def _pump(self) -> None:
        """Send one batch; hand any hits that queued meanwhile to a task of their own."""
        self._sending = True
        batch, self._pending = self._pending, []
        try:
            await self._send(batch)
        finally:
            for _, fut in batch:  # only left undone if we were cancelled mid-call
                if not fut.done():
                    self._failure = ConnectionError("call cancelled before Redis answered")
                    fut.set_result(None)
            self._sending = False
            if self._pending:
                self._sending = True
                t = asyncio.get_running_loop().create_task(self._pump_later())
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)

    async def _pump_later(self) -> None:
        self._sending = False
        await self._pump()

    async def _send(self, batch: _Pending) -> None:
        try:
            res = await self._call([key for key, _ in batch])
        except REDIS_ERRORS as exc:  # TimeoutError included (an OSError)
            self._failure = exc
            for _, fut in batch:
                fut.set_result(None)
            return
        for i, (_, fut) in enumerate(batch):
            if not fut.done():
                fut.set_result((int(res[2 * i]), int(res[2 * i + 1])))

    async def _call(self, keys: list[str]) -> Any:
        return await self._script(keys, [self.window_ms])

    async def aclose(self) -> None:
        await self._script.reset()


class Lease(NamedTuple):
    """What one bucket asks in a lease call."""

    key: str
    want: int  # tokens to take
    give_back: float  # unused tokens returned first
    rate_per_ms: float
    capacity: float


class Grant(NamedTuple):
    granted: int
    left: int  # whole tokens left in the bucket after the grant
    wait_ms: int  # until the bucket holds one token again (0 if it does)


class LeaseCaller:
    """Leases from token buckets in Redis; every call also marks this replica alive and
    answers how many replicas were seen alive within `live_ttl_s`."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        live_key: str,
        replica_id: str,
        live_ttl_s: float,
        timeout_s: float,
    ) -> None:
        self.live_key = live_key
        self.replica_id = replica_id
        self.live_ttl_ms = int(live_ttl_s * 1000)
        self._script = ScriptCaller(redis, TOKEN_BUCKET_LEASE, timeout_s=timeout_s)

    async def lease(self, leases: list[Lease]) -> tuple[int, list[Grant]]:
        """(live replicas, one grant per lease); a `StoreError` when Redis cannot answer."""
        args: list[Any] = [self.replica_id, self.live_ttl_ms]
        for x in leases:
            args += (x.want, repr(float(x.give_back)), repr(x.rate_per_ms), repr(x.capacity))
        try:
            res = await self._script([self.live_key, *(x.key for x in leases)], args)
        except REDIS_ERRORS as exc:
            raise store_error(exc, "fleet limits") from None
        grants = [
            Grant(int(res[i]), int(res[i + 1]), int(res[i + 2])) for i in range(1, len(res), 3)
        ]
        return int(res[0]), grants

    async def aclose(self) -> None:
        await self._script.reset()
