"""Argument types shared by the subcommands: errors name the flag and the rule."""

from __future__ import annotations

import argparse
import re
from typing import Any

from configbus.names import NAMESPACE_RULE, is_namespace
from configbus.rollout import parse_labels, parse_selector


def namespace_arg(value: str) -> str:
    if not is_namespace(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid namespace: {NAMESPACE_RULE}")
    return value


def label_arg(value: str) -> list[tuple[str, str]]:
    """`k=v` (or `k=v,k2=v2`) as pairs, for `action="extend"`."""
    try:
        return list(parse_labels(value, where="label").items())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def selector_arg(value: str) -> str:
    """A stage's selector (`10%`, `tier=canary`), checked here and sent in canonical form."""
    try:
        return str(parse_selector(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]*)?)(ms|s|m|h)?$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_RULE = "a duration like 10s, 2m, 1h or plain seconds"


def duration_arg(value: str) -> float:
    """`10s`, `2m`, `1h`, `500ms` or plain seconds, as seconds."""
    m = _DURATION.fullmatch(value.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not {DURATION_RULE}")
    return float(m[1]) * _UNIT_S[m[2] or "s"]


def rate_arg(value: str) -> float:
    """A rate as a fraction (`0.05`) or a percentage (`5%`)."""
    text = value.strip()
    try:
        return float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a rate: a fraction like 0.05 or a percentage like 5%"
        ) from None


def add_http_limit_flags(p: argparse.ArgumentParser) -> None:
    """Header limits and read timeouts of the service's HTTP server (configbus/httpguard.py)."""
    from configbus import httpguard as g

    p.add_argument(
        "--max-headers", type=int, default=g.DEFAULT_MAX_HEADERS, help="431 above this many"
    )
    p.add_argument(
        "--max-header-bytes",
        type=int,
        default=g.DEFAULT_MAX_HEADER_BYTES,
        help="431 when the request line and headers exceed this",
    )
    p.add_argument(
        "--header-timeout",
        type=float,
        default=g.DEFAULT_HEADER_TIMEOUT_S,
        help="seconds for a request's headers to arrive (408 and close after)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=g.DEFAULT_BODY_TIMEOUT_S,
        help="seconds for a request's body to arrive after its headers (408 and close after)",
    )


def http_protocol(args: argparse.Namespace, base: Any = None) -> Any:
    """uvicorn's `http=`: the guarded protocol (or `base`, a subclass) with the flags' limits."""
    from configbus.httpguard import GuardedProtocol, HttpLimits, guarded_protocol

    return guarded_protocol(
        HttpLimits(
            max_headers=args.max_headers,
            max_header_bytes=args.max_header_bytes,
            header_timeout_s=args.header_timeout,
            body_timeout_s=args.body_timeout,
        ),
        base or GuardedProtocol,
    )
