"""Settings of a proxy replica: the bus settings plus the few knobs of the HTTP front.

The variables, defaults and checks are declared in `configbus.variables`."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgspec

import configbus.variables as v
from configbus.settings import BusSettings, check_fields, read_fields
from configbus.variables import Variable

DEFAULT_MAX_BODY_BYTES = v.PROXY_MAX_BODY_BYTES.default
DEFAULT_GRACEFUL_TIMEOUT_S = v.PROXY_GRACEFUL_TIMEOUT_S.default
DEFAULT_RETRY_BACKOFF_S = 0.02


class ProxySettings(msgspec.Struct, frozen=True, kw_only=True):
    bus: BusSettings
    # Requests with a larger body get 413.
    max_body_bytes: int = v.PROXY_MAX_BODY_BYTES.default
    # On SIGTERM, how long uvicorn lets requests in flight finish.
    graceful_timeout_s: float = v.PROXY_GRACEFUL_TIMEOUT_S.default
    # First retry waits this long, doubling after each, capped at 8x (jittered).
    retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S
    # Freeze startup objects out of the garbage collector and collect young objects less
    # often (see proxy.gc_policy); off for embedding in a process that manages gc itself.
    gc_freeze: bool = True
    # `json`: log lines as JSON objects, with the request id, config version and trace id.
    log_format: str = v.LOG_FORMAT.default
    # Usage, cost and budgets: counted per key and flushed to Redis this often; `usage`
    # False counts nothing (budgets are then not enforced).
    usage_flush_s: float = v.USAGE_FLUSH_S.default
    usage: bool = True

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        max_body_bytes: int | None = None,
        graceful_timeout_s: float | None = None,
        **overrides: object,
    ) -> ProxySettings:
        """Bus settings (see BusSettings) plus the proxy's own variables; flags win."""
        e = os.environ if env is None else env
        values = read_fields(PROXY_FIELDS, e, "proxy")
        flags = {"max_body_bytes": max_body_bytes, "graceful_timeout_s": graceful_timeout_s}
        values.update({k: x for k, x in flags.items() if x is not None})
        settings = cls(bus=BusSettings.from_env(e, command="proxy", **overrides), **values)
        check_fields(PROXY_FIELDS, settings)
        return settings


# Field of ProxySettings → the variable that fills it.
PROXY_FIELDS: Mapping[str, Variable[Any]] = {
    "max_body_bytes": v.PROXY_MAX_BODY_BYTES,
    "graceful_timeout_s": v.PROXY_GRACEFUL_TIMEOUT_S,
    "log_format": v.LOG_FORMAT,
    "usage_flush_s": v.USAGE_FLUSH_S,
}
