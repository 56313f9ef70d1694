"""Admin service settings: tokens, limits, breaker; from keyword arguments or the environment.

The variables, defaults and checks are declared in `configbus.variables`. Tokens come from
`CONFIGBUS_ADMIN_TOKENS` (comma-separated `name:role:token`) and/or the file named by
`CONFIGBUS_ADMIN_TOKENS_FILE` (one `name:role:token` a line, `#` comments). A token may be
given as `sha256:<hex>`, its digest; either way only the digest is kept.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import msgspec

import configbus.variables as v
from configbus.errors import SettingsError
from configbus.settings import BusSettings, check_fields, read_fields
from configbus.variables import Variable

Role = Literal["viewer", "publisher", "sre", "admin"]
ROLES: tuple[str, ...] = get_args(Role)

DEFAULT_MAX_BODY_BYTES = v.ADMIN_MAX_BODY_BYTES.default
DEFAULT_MAX_IMPORT_BYTES = v.ADMIN_MAX_IMPORT_BYTES.default
DEFAULT_PUBLISH_LIMIT = v.ADMIN_PUBLISH_LIMIT.default
DEFAULT_PUBLISH_WINDOW_S = v.ADMIN_PUBLISH_WINDOW_S.default
DEFAULT_BREAKER_FAILURES = v.ADMIN_BREAKER_FAILURES.default
DEFAULT_BREAKER_RESET_S = v.ADMIN_BREAKER_RESET_S.default
DEFAULT_REDIS_TIMEOUT_S = v.ADMIN_REDIS_TIMEOUT_S.default
DEFAULT_HISTORY_RETENTION = v.ADMIN_HISTORY_RETENTION.default

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$")


class Token(msgspec.Struct, frozen=True, kw_only=True):
    """One admin token: who it is, what it may do, and the sha256 of its secret."""

    name: str
    role: Role
    sha256: str

    def __repr__(self) -> str:
        return f"Token(name={self.name!r}, role={self.role!r})"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def parse_token(line: str, where: str) -> Token:
    """`name:role:token` or `name:role:sha256:<hex>`; errors name `where`, never the token."""
    parts = line.strip().split(":", 2)
    if len(parts) != 3 or not all(parts):
        raise SettingsError(f"{where}: expected 'name:role:token'")
    name, role, secret = parts
    if not _NAME.fullmatch(name):
        raise SettingsError(f"{where}: token name {name!r} must be letters, digits and ._@+-")
    if role not in ROLES:
        raise SettingsError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
    if secret.startswith("sha256:"):
        digest = secret[len("sha256:") :].lower()
        if not _HEX64.fullmatch(digest):
            raise SettingsError(f"{where}: 'sha256:' must be followed by 64 hex digits")
    else:
        if len(secret) < 8:
            raise SettingsError(f"{where}: token of {name!r} is too short (8 characters minimum)")
        digest = hash_token(secret)
    return Token(name=name, role=role, sha256=digest)  # type: ignore[arg-type]


def parse_tokens(value: str, where: str) -> list[Token]:
    return [
        parse_token(item, f"{where} entry #{i + 1}")
        for i, item in enumerate(x for x in value.split(",") if x.strip())
    ]


def read_tokens_file(path: Path) -> list[Token]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(
            f"{v.ADMIN_TOKENS_FILE.name}: cannot read {path}: {exc.strerror}"
        ) from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(parse_token(line, f"{path}:{n}"))
    return out


class AdminSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the admin service needs; defaults are the variables' (configbus.variables)."""

    bus: BusSettings
    tokens: tuple[Token, ...]
    max_body_bytes: int = v.ADMIN_MAX_BODY_BYTES.default
    max_import_bytes: int = v.ADMIN_MAX_IMPORT_BYTES.default
    publish_limit: int = v.ADMIN_PUBLISH_LIMIT.default
    publish_window_s: int = v.ADMIN_PUBLISH_WINDOW_S.default
    breaker_failures: int = v.ADMIN_BREAKER_FAILURES.default
    breaker_reset_s: float = v.ADMIN_BREAKER_RESET_S.default
    redis_timeout_s: float = v.ADMIN_REDIS_TIMEOUT_S.default
    # Versions kept per namespace; the Store trims older ones (never head).
    history_retention: int = v.ADMIN_HISTORY_RETENTION.default
    hint_max_bytes: int = v.ADMIN_HINT_MAX_BYTES.default
    # Redis replicas that must acknowledge a publish (WAIT) before a 201 (docs/deploy.md).
    min_replicas_to_ack: int = v.ADMIN_MIN_REPLICAS_TO_ACK.default
    replica_ack_timeout_s: float = v.ADMIN_REPLICA_ACK_TIMEOUT_S.default

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        bus: BusSettings | None = None,
        **overrides: object,
    ) -> AdminSettings:
        """Read the variables the admin reads (configbus.variables); non-None overrides win."""
        e = os.environ if env is None else env
        tokens = parse_tokens(v.ADMIN_TOKENS.read(e), v.ADMIN_TOKENS.name)
        tokens_file = v.ADMIN_TOKENS_FILE.read(e)
        if tokens_file is not None:
            tokens += read_tokens_file(tokens_file)
        values: dict[str, object] = {
            "bus": bus or BusSettings.from_env(e, command="admin"),
            "tokens": tuple(tokens),
            **read_fields(ADMIN_FIELDS, e, "admin"),
        }
        values.update({k: x for k, x in overrides.items() if x is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if not self.tokens:
            raise SettingsError(
                f"no admin token configured: set {v.ADMIN_TOKENS.name}='name:role:token' "
                f"(roles: {', '.join(ROLES)}) or {v.ADMIN_TOKENS_FILE.name}"
            )
        names = [t.name for t in self.tokens]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SettingsError(f"admin tokens: duplicate token names {', '.join(dup)}")
        digests = [t.sha256 for t in self.tokens]
        if len(set(digests)) != len(digests):
            raise SettingsError("admin tokens: two entries share the same token")
        check_fields(ADMIN_FIELDS, self)
        if self.min_replicas_to_ack and "cluster=" in self.bus.redis_url:
            raise SettingsError(
                f"{v.ADMIN_MIN_REPLICAS_TO_ACK.name}: not supported with a Redis Cluster URL"
            )


# Field of AdminSettings → the variable that fills it (tokens are parsed above).
ADMIN_FIELDS: Mapping[str, Variable[Any]] = {
    "max_body_bytes": v.ADMIN_MAX_BODY_BYTES,
    "max_import_bytes": v.ADMIN_MAX_IMPORT_BYTES,
    "publish_limit": v.ADMIN_PUBLISH_LIMIT,
    "publish_window_s": v.ADMIN_PUBLISH_WINDOW_S,
    "breaker_failures": v.ADMIN_BREAKER_FAILURES,
    "breaker_reset_s": v.ADMIN_BREAKER_RESET_S,
    "redis_timeout_s": v.ADMIN_REDIS_TIMEOUT_S,
    "history_retention": v.ADMIN_HISTORY_RETENTION,
    "hint_max_bytes": v.ADMIN_HINT_MAX_BYTES,
    "min_replicas_to_ack": v.ADMIN_MIN_REPLICAS_TO_ACK,
    "replica_ack_timeout_s": v.ADMIN_REPLICA_ACK_TIMEOUT_S,
}
