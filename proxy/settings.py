"""Settings of a proxy replica: the bus settings plus the few knobs of the HTTP front."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec

from configbus.errors import SettingsError
from configbus.settings import BusSettings, env_int

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_RETRY_BACKOFF_S = 0.02


class ProxySettings(msgspec.Struct, frozen=True, kw_only=True):
    bus: BusSettings
    # Requests with a larger body get 413 (env CONFIGBUS_PROXY_MAX_BODY_BYTES).
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    # First retry waits this long, doubling after each, capped at 8x (jittered).
    retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S
    # Freeze startup objects out of the garbage collector and collect young objects less
    # often (see proxy.app); off for embedding in a process that manages gc itself.
    gc_freeze: bool = True

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        max_body_bytes: int | None = None,
        **overrides: object,
    ) -> ProxySettings:
        """Bus settings from CONFIGBUS_* (see BusSettings), plus the proxy's own; flags win."""
        e = os.environ if env is None else env
        max_body = env_int(e, "CONFIGBUS_PROXY_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)
        if max_body_bytes is not None:
            max_body = max_body_bytes
        if max_body < 1:
            raise SettingsError("CONFIGBUS_PROXY_MAX_BODY_BYTES: must be at least 1")
        return cls(bus=BusSettings.from_env(env, **overrides), max_body_bytes=max_body)
