"""How a setting is declared and read: a `Variable` (name, default, meaning, reader, the
commands that read it) and the `Reader`s that turn an environment variable's text into a
checked value. The declarations themselves are in `configbus.variables`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Generic, Literal, TypeVar, get_args

import msgspec

from configbus.connection import SENTINEL_SCHEMES, parse_sentinel_url
from configbus.crypto import SecretBox
from configbus.errors import SettingsError
from configbus.names import NAMESPACE_RULE, is_namespace

T = TypeVar("T")
Command = Literal["admin", "proxy", "client", "up"]
COMMANDS: tuple[Command, ...] = get_args(Command)


def _anything(value: object) -> None:
    return None


class Reader(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """How a variable's text becomes a value (`parse`), and which values are allowed
    (`check`, also applied to values given by flags). Both raise ValueError with a message
    that the variable prefixes with its name, or a SettingsError that already names it."""

    kind: str  # what the value is, for the docs
    parse: Callable[[str], T]
    check: Callable[[T], None] = _anything
    # An empty value means "unset" (the default), except where the default would hide a
    # mistake: an empty Redis URL or namespace is refused, not replaced.
    blank_is_default: bool = True


class Variable(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """One environment variable: the only place its name, default and meaning are written."""

    name: str
    default: T
    meaning: str
    reader: Reader[T]
    commands: frozenset[Command]
    # Commands a deployment must give it to: they refuse to start without it, or its
    # default only suits a process on the developer's machine.
    required: frozenset[Command] = frozenset()
    # Another variable that may be set in this one's place (tokens or a tokens file).
    instead: str = ""
    # How the docs show a default computed at start (the replica id).
    shown_default: str = ""

    def read(self, env: Mapping[str, str]) -> T:
        """The checked value of `env[name]`; the default when unset (or empty, see Reader)."""
        raw = env.get(self.name)
        if raw is None or (raw == "" and self.reader.blank_is_default):
            return self.default
        return self.parse(raw)

    def parse(self, raw: str) -> T:
        try:
            value = self.reader.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{self.name}: {exc}") from None
        return self.check(value)

    def check(self, value: T) -> T:
        try:
            self.reader.check(value)
        except ValueError as exc:
            raise SettingsError(f"{self.name}: {exc}") from None
        return value


# --------------------------------------------------------------------------------------
# Readers


def _number(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{raw!r} is not a finite number")
    return value


def integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not an integer") from None


def _above_zero(value: float) -> None:
    if not value > 0:
        raise ValueError("must be above 0")


def at_least_one(value: int) -> None:
    if value < 1:
        raise ValueError("must be at least 1")


def _redis_url(value: str) -> None:
    if value.startswith(SENTINEL_SCHEMES):
        try:
            parse_sentinel_url(value)
        except ValueError as exc:
            raise ValueError(f"sentinel URL: {exc}") from None
        return
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"{value!r} is not a redis://, rediss://, unix:// or redis+sentinel:// URL"
        )


def _plain_redis_url(value: str) -> None:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"{value!r} is not a redis://, rediss:// or unix:// URL")


def redis_urls(value: str) -> None:
    if value.strip() == "replicas":  # the primary's own, found through Sentinel or Cluster
        return
    for url in value.split(","):
        if url.strip():
            _plain_redis_url(url.strip())


def at_least_zero(value: int) -> None:
    if value < 0:
        raise ValueError("must be at least 0")


def _namespace(value: str) -> None:
    if not is_namespace(value):
        raise ValueError(f"{value!r} is not a valid namespace: {NAMESPACE_RULE}")


def _keys(raw: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in raw.split(",") if k.strip())


def _fernet_keys(keys: tuple[str, ...]) -> None:
    if keys:
        SecretBox(keys)  # a SettingsError naming the variable and the bad key


def _path(raw: str) -> Path | None:
    return Path(raw)


TEXT = Reader[str](kind="text", parse=str)
URL = Reader[str](kind="URL", parse=str)
REDIS = Reader[str](
    kind="`redis://`, `rediss://` (TLS), `unix://` or `redis+sentinel://` URL",
    parse=str,
    check=_redis_url,
    blank_is_default=False,
)
NAMESPACE_NAME = Reader[str](
    kind=f"namespace: {NAMESPACE_RULE}", parse=str, check=_namespace, blank_is_default=False
)
FERNET_KEYS = Reader[tuple[str, ...]](
    kind="Fernet keys, comma-separated", parse=_keys, check=_fernet_keys
)
PATH = Reader[Path | None](kind="file path", parse=_path)
SECONDS = Reader[float](kind="seconds (> 0)", parse=_number, check=_above_zero)
COUNT = Reader[int](kind="integer (≥ 1)", parse=integer, check=at_least_one)
BYTES = Reader[int](kind="bytes (≥ 1)", parse=integer, check=at_least_one)


def _log_format(value: str) -> None:
    if value not in ("text", "json"):
        raise ValueError(f"{value!r} is not a log format (text or json)")


LOG_FORMATS = Reader[str](kind="`text` or `json`", parse=str.lower, check=_log_format)
