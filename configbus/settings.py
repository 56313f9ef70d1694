"""Settings shared by every configbus process, from keyword arguments or the environment.

Defaults live here and nowhere else. `from_env()` names the variable in every error.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import msgspec

from configbus.crypto import SecretBox
from configbus.errors import SettingsError
from configbus.names import DEFAULT_NAMESPACE, check_namespace

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_RECONCILE_INTERVAL_S = 5.0
DEFAULT_HEARTBEAT_INTERVAL_S = 5.0


class BusSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where the bus is and who this process is on it."""

    redis_url: str = DEFAULT_REDIS_URL
    namespace: str = DEFAULT_NAMESPACE
    # Fernet keys, newest first. Empty: secrets cannot be encrypted or decrypted.
    secret_keys: tuple[str, ...] = ()
    replica_id: str = ""
    snapshot_path: Path | None = None
    reconcile_interval_s: float = DEFAULT_RECONCILE_INTERVAL_S
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> BusSettings:
        """Read CONFIGBUS_* variables; keyword overrides (flags) win when not None."""
        e = os.environ if env is None else env
        values: dict[str, object] = {
            "redis_url": e.get("CONFIGBUS_REDIS_URL", DEFAULT_REDIS_URL),
            "namespace": e.get("CONFIGBUS_NAMESPACE", DEFAULT_NAMESPACE),
            "secret_keys": tuple(
                k.strip() for k in e.get("CONFIGBUS_SECRET_KEYS", "").split(",") if k.strip()
            ),
            "replica_id": e.get("CONFIGBUS_REPLICA_ID", ""),
            "snapshot_path": Path(e["CONFIGBUS_SNAPSHOT_PATH"])
            if e.get("CONFIGBUS_SNAPSHOT_PATH")
            else None,
            "reconcile_interval_s": env_float(
                e, "CONFIGBUS_RECONCILE_INTERVAL_S", DEFAULT_RECONCILE_INTERVAL_S
            ),
            "heartbeat_interval_s": env_float(
                e, "CONFIGBUS_HEARTBEAT_INTERVAL_S", DEFAULT_HEARTBEAT_INTERVAL_S
            ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        if not values["replica_id"]:
            values["replica_id"] = f"{socket.gethostname()}-{os.getpid()}"
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                f"CONFIGBUS_REDIS_URL: {self.redis_url!r} is not a redis://, rediss:// or "
                "unix:// URL"
            )
        check_namespace(self.namespace, where="CONFIGBUS_NAMESPACE")
        if self.secret_keys:
            SecretBox(self.secret_keys)  # raises SettingsError naming the bad key
        if self.reconcile_interval_s <= 0:
            raise SettingsError("CONFIGBUS_RECONCILE_INTERVAL_S: must be above 0")
        if self.heartbeat_interval_s <= 0:
            raise SettingsError("CONFIGBUS_HEARTBEAT_INTERVAL_S: must be above 0")


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    """A finite number from `env[name]`, `default` when unset; the error names the variable."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"{name}: {raw!r} is not a finite number")
    return value


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    """An integer from `env[name]`, `default` when unset; the error names the variable."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}: {raw!r} is not an integer") from None
