"""Redis calls as configbus errors: which redis-py errors mean "Redis cannot serve now"
(StoreUnavailable: callers fail fast, keep serving, retry) and which are plain errors."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from redis.exceptions import (
    BusyLoadingError,
    MasterDownError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from configbus.errors import StoreError, StoreUnavailable

# Errors that mean "Redis cannot serve right now" (down, timing out, failing over, a cluster
# without quorum, a replica that became read-only), as opposed to a bad request.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ReadOnlyError,
    RedisClusterException,
    TryAgainError,
    MasterDownError,
    BusyLoadingError,
)


# Everything a redis-py call may raise that is about Redis, not about our code.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, *UNAVAILABLE_ERRORS)


def store_error(exc: BaseException, what: str) -> StoreError:
    """The configbus error for a redis-py error: StoreUnavailable when Redis cannot serve."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return StoreUnavailable(f"{what}: Redis unavailable: {exc}")
    return StoreError(f"{what}: Redis error: {exc}")


async def guarded(op: Awaitable[Any], what: str) -> Any:
    # redis-py's reply types are unions of everything RESP can carry: callers know the shape.
    try:
        return await op
    except REDIS_ERRORS as exc:
        raise store_error(exc, what) from exc
