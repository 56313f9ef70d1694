"""Admin service settings: tokens, limits, breaker; from keyword arguments or the environment.

Tokens come from `CONFIGBUS_ADMIN_TOKENS` (comma-separated `name:role:token`) and/or the file
named by `CONFIGBUS_ADMIN_TOKENS_FILE` (one `name:role:token` a line, `#` comments). A token
may be given as `sha256:<hex>`, its digest; either way only the digest is kept.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

import msgspec

from configbus.errors import SettingsError
from configbus.settings import BusSettings, env_float, env_int

Role = Literal["viewer", "publisher", "sre", "admin"]
ROLES: tuple[str, ...] = get_args(Role)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
DEFAULT_MAX_IMPORT_BYTES = 32 * 1024 * 1024
DEFAULT_PUBLISH_LIMIT = 30  # write requests per token per window, across every admin instance
DEFAULT_PUBLISH_WINDOW_S = 60
DEFAULT_BREAKER_FAILURES = 3
DEFAULT_BREAKER_RESET_S = 5.0
DEFAULT_REDIS_TIMEOUT_S = 1.0

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
            f"CONFIGBUS_ADMIN_TOKENS_FILE: cannot read {path}: {exc.strerror}"
        ) from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(parse_token(line, f"{path}:{n}"))
    return out


class AdminSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the admin service needs; defaults live in the DEFAULT_* constants above."""

    bus: BusSettings
    tokens: tuple[Token, ...]
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_import_bytes: int = DEFAULT_MAX_IMPORT_BYTES
    publish_limit: int = DEFAULT_PUBLISH_LIMIT
    publish_window_s: int = DEFAULT_PUBLISH_WINDOW_S
    breaker_failures: int = DEFAULT_BREAKER_FAILURES
    breaker_reset_s: float = DEFAULT_BREAKER_RESET_S
    redis_timeout_s: float = DEFAULT_REDIS_TIMEOUT_S

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str] | None = None,
        *,
        bus: BusSettings | None = None,
        **overrides: object,
    ) -> AdminSettings:
        """Read CONFIGBUS_* and CONFIGBUS_ADMIN_* variables; non-None overrides win."""
        e = os.environ if env is None else env
        tokens = parse_tokens(e.get("CONFIGBUS_ADMIN_TOKENS", ""), "CONFIGBUS_ADMIN_TOKENS")
        if e.get("CONFIGBUS_ADMIN_TOKENS_FILE"):
            tokens += read_tokens_file(Path(e["CONFIGBUS_ADMIN_TOKENS_FILE"]))
        values: dict[str, object] = {
            "bus": bus or BusSettings.from_env(e),
            "tokens": tuple(tokens),
            "max_body_bytes": env_int(e, "CONFIGBUS_ADMIN_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES),
            "max_import_bytes": env_int(
                e, "CONFIGBUS_ADMIN_MAX_IMPORT_BYTES", DEFAULT_MAX_IMPORT_BYTES
            ),
            "publish_limit": env_int(e, "CONFIGBUS_ADMIN_PUBLISH_LIMIT", DEFAULT_PUBLISH_LIMIT),
            "publish_window_s": env_int(
                e, "CONFIGBUS_ADMIN_PUBLISH_WINDOW_S", DEFAULT_PUBLISH_WINDOW_S
            ),
            "breaker_failures": env_int(
                e, "CONFIGBUS_ADMIN_BREAKER_FAILURES", DEFAULT_BREAKER_FAILURES
            ),
            "breaker_reset_s": env_float(
                e, "CONFIGBUS_ADMIN_BREAKER_RESET_S", DEFAULT_BREAKER_RESET_S
            ),
            "redis_timeout_s": env_float(
                e, "CONFIGBUS_ADMIN_REDIS_TIMEOUT_S", DEFAULT_REDIS_TIMEOUT_S
            ),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)  # type: ignore[arg-type]
        settings.check()
        return settings

    def check(self) -> None:
        if not self.tokens:
            raise SettingsError(
                "no admin token configured: set CONFIGBUS_ADMIN_TOKENS='name:role:token' "
                "(roles: viewer, publisher, sre, admin) or CONFIGBUS_ADMIN_TOKENS_FILE"
            )
        names = [t.name for t in self.tokens]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise SettingsError(f"admin tokens: duplicate token names {', '.join(dup)}")
        digests = [t.sha256 for t in self.tokens]
        if len(set(digests)) != len(digests):
            raise SettingsError("admin tokens: two entries share the same token")
        for name, value in (
            ("CONFIGBUS_ADMIN_MAX_BODY_BYTES", self.max_body_bytes),
            ("CONFIGBUS_ADMIN_MAX_IMPORT_BYTES", self.max_import_bytes),
            ("CONFIGBUS_ADMIN_PUBLISH_LIMIT", self.publish_limit),
            ("CONFIGBUS_ADMIN_PUBLISH_WINDOW_S", self.publish_window_s),
            ("CONFIGBUS_ADMIN_BREAKER_FAILURES", self.breaker_failures),
        ):
            if value < 1:
                raise SettingsError(f"{name}: must be at least 1")
        if self.breaker_reset_s <= 0:
            raise SettingsError("CONFIGBUS_ADMIN_BREAKER_RESET_S: must be above 0")
        if self.redis_timeout_s <= 0:
            raise SettingsError("CONFIGBUS_ADMIN_REDIS_TIMEOUT_S: must be above 0")
