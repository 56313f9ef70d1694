"""The change channel's listener: stay subscribed, hand each message to a callback.

Messages are hints, never the only way to learn of a change (reconcile covers a lost one),
so the listener's one job is to come back: it resubscribes with capped, jittered backoff
after any loss, and reports each (re)subscribe, since messages may have been missed while
it was away. Given a function rather than a client, it listens where that function says
and moves when the answer changes (a read replica set aside, then back).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

log = logging.getLogger("configbus.channel")


class ChannelListener:
    """Subscribes to `channels` on `redis` until `running()` turns false."""

    def __init__(
        self,
        redis: aioredis.Redis | Callable[[], aioredis.Redis],
        channels: dict[str, Callable[[bytes], None]],
        *,
        on_subscribed: Callable[[], None],
        running: Callable[[], bool],
        max_backoff_s: float,
    ) -> None:
        if isinstance(redis, aioredis.Redis) or hasattr(redis, "pubsub"):  # a (cluster) client
            client: aioredis.Redis = redis  # type: ignore[assignment]
            self._source: Callable[[], aioredis.Redis] = lambda: client
        else:
            self._source = redis
        self._redis = self._source()
        self._channels = channels
        self._on_subscribed = on_subscribed
        self._running = running
        self._max_backoff_s = max_backoff_s
        self.subscribed = False  # live now (else only reconcile finds news)

    async def run(self) -> None:
        while self._running():
            try:
                pubsub = await self._subscribe()
            except Exception:
                log.exception("cannot subscribe to the change channel")
                await asyncio.sleep(self._max_backoff_s)
                continue
            try:
                await self._read(pubsub)
            except (RedisError, OSError) as exc:
                log.warning("change channel lost: %s", exc)
            except Exception:
                # Never let the listener die quietly: reconcile alone would be slow.
                log.exception("change channel reader failed; resubscribing")
                await asyncio.sleep(self._max_backoff_s)
            finally:
                self.subscribed = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _subscribe(self) -> PubSub:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((RedisError, OSError)),
            stop=lambda _: not self._running(),
            wait=wait_exponential_jitter(multiplier=0.05, max=self._max_backoff_s, jitter=0.1),
        ):
            with attempt:
                self._redis = self._source()
                # A cluster client must know the slot map before its pub/sub can route.
                await self._redis.initialize()
                pubsub = _pubsub(self._redis)
                try:
                    await pubsub.subscribe(*self._channels)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]
                    raise
                return pubsub
        # AsyncRetrying returns on success and raises RetryError once stopped.
        raise AssertionError("unreachable")  # pragma: no cover

    async def _read(self, pubsub: PubSub) -> None:
        handlers = {c.encode(): fn for c, fn in self._channels.items()}
        while self._running():
            if self._source() is not self._redis:
                return  # resubscribe where the source now says
            msg = await pubsub.get_message(timeout=1.0)
            if msg is None:
                continue
            if msg["type"] == "subscribe":
                self.subscribed = True
                self._on_subscribed()
            elif msg["type"] == "message":
                channel = msg["channel"]
                handler = handlers.get(channel if isinstance(channel, bytes) else channel.encode())
                if handler is not None:
                    handler(msg["data"])


async def _as_is(response: Any) -> Any:
    return response


def _pubsub(redis: aioredis.Redis) -> PubSub:
    """A PubSub that hands messages over as they come. redis-py's default handler logs each
    message at debug level, building `str(message)` first whatever the level: for a hint
    that carries a 10 KB document, that string is most of what receiving it costs."""
    try:
        return redis.pubsub(push_handler_func=_as_is)
    except TypeError:  # a client whose pubsub() takes no handler (a cluster's)
        return redis.pubsub()
