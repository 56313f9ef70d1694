"""Argument types shared by the subcommands: errors name the flag and the rule."""

from __future__ import annotations

import argparse

from configbus.names import NAMESPACE_RULE, is_namespace
from configbus.rollout import parse_labels


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
