"""The response cache: exact-match answers kept fleet-wide in Redis, per model.

A model with `cache` set has a `ModelCache` on its route. Its key is the sha256 of the
model's routing tag (its deployments, strategy, params, fallbacks and the providers they
name: a config change of the model misses the old entries), the endpoint, and the request
as normalized JSON (keys sorted; `stream` and `stream_options` left out, so a streamed
request finds an answer stored by a plain one and gets it replayed as a stream).

Only models with a cache pay for it: one Redis GET per request, on a connection of its own
with a short timeout. Redis trouble is a miss, and opens a breaker that skips lookups for
a second, so a down Redis costs no request a timeout more than once a second. Only
200 answers no larger than `max_entry_bytes` are stored, in the background, after the
answer went out; a streamed answer is rebuilt into the plain answer it spells
(`StreamRecorder`) and stored when it ended whole with its usage chunk. `Cache-Control: no-cache` skips the lookup (the fresh answer is stored);
`no-store` skips both.

Stored value: the provider's name that served it, a newline, the body as sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter

from configbus import REDIS_ERRORS, Breaker, CircuitBreaker, Document, ResponseStore

log = logging.getLogger("proxy.cache")

CACHE_HEADER = b"x-configbus-cache"
HIT, MISS = b"hit", b"miss"
# After a Redis error, lookups are skipped (misses) for this long.
SKIP_AFTER_ERROR_S = 1.0
# Writes not yet done beyond this many are dropped (Redis slow: the cache is best effort).
MAX_PENDING_WRITES = 1000
# A stream's events are bigger than the answer they spell: recording stops past this many
# times `max_entry_bytes` (the rebuilt answer is then held to `max_entry_bytes` itself).
RECORD_LIMIT_FACTOR = 8

_encode_sorted = msgspec.json.Encoder(order="sorted").encode
_encode_det = msgspec.json.Encoder(order="deterministic").encode
_decode = msgspec.json.Decoder().decode
_UNKEYED = ("stream", "stream_options")


class ModelCache:
    """One model's cache settings in one snapshot, with its routing tag."""

    __slots__ = ("max_bytes", "model", "tag", "ttl_s")

    def __init__(self, model: str, tag: bytes, ttl_s: int, max_bytes: int) -> None:
        self.model = model
        self.tag = tag
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes


def model_cache(doc: Document, name: str) -> ModelCache | None:
    """The cache of model `name`, tagged with what routes it (None when it has none)."""
    m = doc.model(name)
    if m is None or m.cache is None:
        return None
    models = [m, *(x for x in doc.models if x.name in m.fallbacks)]
    names = {d.provider for x in models for d in x.deployments}
    providers = [
        (p.name, p.type, p.base_url, p.api_version, p.enabled)
        for p in doc.providers
        if p.name in names
    ]
    tag = hashlib.sha256(_encode_det([models, providers])).digest()
    return ModelCache(m.name, tag, m.cache.ttl_s, m.cache.max_entry_bytes)


def bypass(cache_control: bytes | None) -> tuple[bool, bool]:
    """(skip the lookup, skip the store) for a request's Cache-Control header."""
    if cache_control is None:
        return False, False
    cc = cache_control.lower()
    if b"no-store" in cc:
        return True, True
    return b"no-cache" in cc, False


def request_key(mc: ModelCache, purpose: str, req: dict[str, Any]) -> str:
    if "stream" in req or "stream_options" in req:
        req = {k: v for k, v in req.items() if k not in _UNKEYED}
    h = hashlib.sha256(mc.tag)
    h.update(purpose.encode())
    h.update(b"\0")
    h.update(_encode_sorted(req))
    return h.hexdigest()


class ResponseCache:
    """The replica's side of the cache: lookups, background writes, metrics."""

    def __init__(self, store: ResponseStore | None, registry: CollectorRegistry) -> None:
        self._store = store
        self._breaker = Breaker(
            CircuitBreaker(failure_threshold=1, recovery_timeout_s=SKIP_AFTER_ERROR_S)
        )
        self._pending: set[asyncio.Task[None]] = set()
        self._outcomes = Counter(
            "configbus_proxy_cache",
            "Response cache lookups and writes by public model and outcome (hit, miss, "
            "error; stored, too_large, not_stored, store_error)",
            ["model", "outcome"],
            registry=registry,
        )
        self._children: dict[tuple[str, str], Counter] = {}

    def count(self, model: str, outcome: str) -> None:
        key = (model, outcome)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = self._outcomes.labels(model, outcome)
        c.inc()

    async def get(self, mc: ModelCache, key: str) -> tuple[bytes, bytes] | None:
        """(provider, body) of a stored answer, or None: a miss, or Redis in trouble."""
        store = self._store
        if store is None or not self._breaker.allow():
            self.count(mc.model, "error")
            return None
        try:
            value = await store.get(key)
        except REDIS_ERRORS as exc:
            self._breaker.failure()
            log.warning("response cache lookup failed (a miss): %r", exc)
            self.count(mc.model, "error")
            return None
        except BaseException:
            self._breaker.release()
            raise
        self._breaker.success()
        if value is None:
            self.count(mc.model, "miss")
            return None
        provider, _, body = value.partition(b"\n")
        self.count(mc.model, "hit")
        return provider, body

    def put(self, mc: ModelCache, key: str, provider: bytes, body: bytes) -> None:
        """Store a 200 answer in the background (never delays the answer)."""
        if self._store is None:
            return
        if len(body) > mc.max_bytes:
            self.count(mc.model, "too_large")
            return
        if len(self._pending) >= MAX_PENDING_WRITES:
            self.count(mc.model, "store_error")
            return
        t = asyncio.get_running_loop().create_task(self._put(mc, key, provider + b"\n" + body))
        self._pending.add(t)
        t.add_done_callback(self._pending.discard)

    def record(self, mc: ModelCache, key: str, provider: bytes, tap: Callable[..., None]) -> None:
        """Store a streamed answer once it ended whole: `tap(feed, done)` (RelayResponse's)
        shows it the chunks as they go out."""
        recorder = StreamRecorder(RECORD_LIMIT_FACTOR * mc.max_bytes)

        def done() -> None:
            body = recorder.completion()
            if body is None:
                self.count(mc.model, "not_stored")
            else:
                self.put(mc, key, provider, body)

        tap(recorder.feed, done)

    async def _put(self, mc: ModelCache, key: str, value: bytes) -> None:
        assert self._store is not None
        try:
            await self._store.put(key, value, mc.ttl_s)
        except REDIS_ERRORS as exc:
            log.warning("response cache write failed: %r", exc)
            self.count(mc.model, "store_error")
            return
        self.count(mc.model, "stored")

    async def aclose(self) -> None:
        """Wait for the writes in flight (shutdown)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)


def replay(body: bytes, include_usage: bool) -> bytes:
    """A cached chat completion as the server-sent events of a stream of it."""
    try:
        done = _decode(body)
        choices = done["choices"]
        base = {
            "id": done.get("id", ""),
            "object": "chat.completion.chunk",
            "created": done.get("created", int(time.time())),
            "model": done.get("model", ""),
        }
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        return b"data: " + body + b"\n\ndata: [DONE]\n\n"
    out = []

    def event(choices: list[Any], **extra: Any) -> None:
        out.append(b"data: " + _encode_det({**base, "choices": choices, **extra}) + b"\n\n")

    for c in choices:
        i = c.get("index", 0)
        msg = c.get("message") or {}
        delta: dict[str, Any] = {"role": msg.get("role", "assistant"), "content": ""}
        event([{"index": i, "delta": delta, "finish_reason": None}])
        if msg.get("content"):
            event([{"index": i, "delta": {"content": msg["content"]}, "finish_reason": None}])
        calls = msg.get("tool_calls")
        if calls:
            indexed = [{"index": k, **call} for k, call in enumerate(calls)]
            event([{"index": i, "delta": {"tool_calls": indexed}, "finish_reason": None}])
        event([{"index": i, "delta": {}, "finish_reason": c.get("finish_reason") or "stop"}])
    if include_usage and done.get("usage") is not None:
        event([], usage=done["usage"])
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


class StreamRecorder:
    """Rebuilds the chat completion a stream of `chat.completion.chunk` events spells, so a
    streamed miss can be stored like a plain one. Gives up (records nothing) on an error
    event, events that are not chunks, or more than `limit` bytes; a stream without its
    usage chunk is not stored either (a plain answer always carries usage)."""

    __slots__ = ("_choices", "_head", "_rest", "_size", "_usage", "failed", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.failed = False
        self._rest = b""
        self._size = 0
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: Any = None

    def feed(self, chunk: bytes) -> None:
        if self.failed:
            return
        self._size += len(chunk)
        if self._size > self.limit:
            self.failed = True
            return
        data = self._rest + chunk
        *events, self._rest = data.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._event(line[5:].strip())

    def _event(self, data: bytes) -> None:
        if data == b"[DONE]" or not data:
            return
        try:
            ev = _decode(data)
            if not isinstance(ev, dict) or "error" in ev:
                self.failed = True
                return
            if not self._head:
                self._head = {k: ev.get(k) for k in ("id", "created", "model")}
            if ev.get("usage") is not None:
                self._usage = ev["usage"]
            for c in ev.get("choices") or ():
                self._choice(c)
        except (msgspec.DecodeError, AttributeError, TypeError, KeyError):
            self.failed = True

    def _choice(self, c: dict[str, Any]) -> None:
        i = c.get("index", 0)
        msg = self._choices.get(i)
        if msg is None:
            msg = self._choices[i] = {"role": "assistant", "content": [], "tools": {},
                                      "finish": None}  # fmt: skip
        delta = c.get("delta") or {}
        if delta.get("role"):
            msg["role"] = delta["role"]
        if delta.get("content"):
            msg["content"].append(delta["content"])
        for call in delta.get("tool_calls") or ():
            k = call.get("index", 0)
            fn = call.get("function") or {}
            have = msg["tools"].get(k)
            if have is None:
                msg["tools"][k] = {"id": call.get("id", ""), "type": call.get("type", "function"),
                                   "function": {"name": fn.get("name", ""),
                                                "arguments": fn.get("arguments", "")}}  # fmt: skip
            else:
                have["function"]["arguments"] += fn.get("arguments", "")
        if c.get("finish_reason"):
            msg["finish"] = c["finish_reason"]

    def completion(self) -> bytes | None:
        """The completed answer's body, or None when it cannot be stored."""
        if self.failed or not self._choices or self._usage is None:
            return None
        choices = []
        for i in sorted(self._choices):
            m = self._choices[i]
            message: dict[str, Any] = {
                "role": m["role"],
                "content": "".join(m["content"]) if m["content"] or not m["tools"] else None,
            }
            if m["tools"]:
                message["tool_calls"] = [m["tools"][k] for k in sorted(m["tools"])]
            choices.append({"index": i, "message": message, "finish_reason": m["finish"]})
        return _encode_det(
            {"id": self._head.get("id") or "", "object": "chat.completion",
             "created": self._head.get("created") or int(time.time()),
             "model": self._head.get("model") or "", "choices": choices, "usage": self._usage}
        )  # fmt: skip
