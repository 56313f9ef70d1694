"""Settings shared by every configbus process, from keyword arguments or the environment.

The variables, their defaults and their checks are declared in `configbus.variables`; this
object reads them from there. Every error names the variable.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from configbus import variables as v
from configbus.errors import SettingsError
from configbus.variables import Command, Variable

__all__ = [
    "BUS_FIELDS",
    "DEFAULT_HEARTBEAT_INTERVAL_S",
    "DEFAULT_RECONCILE_INTERVAL_S",
    "DEFAULT_REDIS_URL",
    "BusSettings",
    "check_fields",
    "read_fields",
]

DEFAULT_REDIS_URL = v.REDIS_URL.default
DEFAULT_RECONCILE_INTERVAL_S = v.RECONCILE_INTERVAL_S.default
DEFAULT_HEARTBEAT_INTERVAL_S = v.HEARTBEAT_INTERVAL_S.default


class BusSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where the bus is and who this process is on it."""

    redis_url: str = v.REDIS_URL.default
    redis_read_url: str = v.REDIS_READ_URL.default  # read replicas, comma-separated
    namespace: str = v.NAMESPACE.default
    # Fernet keys, newest first. Empty: secrets cannot be encrypted or decrypted.
    secret_keys: tuple[str, ...] = v.SECRET_KEYS.default
    replica_id: str = v.REPLICA_ID.default
    labels: dict[str, str] = {}
    snapshot_path: Path | None = v.SNAPSHOT_PATH.default
    reconcile_interval_s: float = v.RECONCILE_INTERVAL_S.default
    heartbeat_interval_s: float = v.HEARTBEAT_INTERVAL_S.default

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        command: Command = "proxy",
        **overrides: object,
    ) -> BusSettings:
        """Read the variables `command` reads (see configbus.variables); the others keep
        their defaults. Keyword overrides (flags) win when not None."""
        values = read_fields(BUS_FIELDS, os.environ if env is None else env, command)
        values.update({k: x for k, x in overrides.items() if x is not None})
        if not values.get("replica_id"):
            values["replica_id"] = f"{socket.gethostname()}-{os.getpid()}"
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        check_fields(BUS_FIELDS, self)
        if self.redis_read_url.strip() == "replicas" and not (
            self.redis_url.startswith(("redis+sentinel://", "rediss+sentinel://"))
            or "cluster=true" in self.redis_url
        ):
            raise SettingsError(
                "CONFIGBUS_REDIS_READ_URL=replicas: CONFIGBUS_REDIS_URL must name its "
                "replicas' source: a redis+sentinel:// URL or one with ?cluster=true"
            )


# Field of BusSettings → the variable that fills it.
BUS_FIELDS: Mapping[str, Variable[Any]] = {
    "redis_url": v.REDIS_URL,
    "redis_read_url": v.REDIS_READ_URL,
    "namespace": v.NAMESPACE,
    "secret_keys": v.SECRET_KEYS,
    "replica_id": v.REPLICA_ID,
    "labels": v.REPLICA_LABELS,
    "snapshot_path": v.SNAPSHOT_PATH,
    "reconcile_interval_s": v.RECONCILE_INTERVAL_S,
    "heartbeat_interval_s": v.HEARTBEAT_INTERVAL_S,
}


def read_fields(
    fields: Mapping[str, Variable[Any]], env: Mapping[str, str], command: Command
) -> dict[str, Any]:
    """field → value of its variable in `env`, for the variables `command` reads."""
    return {name: var.read(env) for name, var in fields.items() if command in var.commands}


def check_fields(fields: Mapping[str, Variable[Any]], settings: msgspec.Struct) -> None:
    """Each field's value passes its variable's check (values from flags included)."""
    for name, var in fields.items():
        var.check(getattr(settings, name))
