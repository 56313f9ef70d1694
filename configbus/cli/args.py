"""Argument types shared by the subcommands: errors name the flag and the rule."""

from __future__ import annotations

import argparse

from configbus.names import NAMESPACE_RULE, is_namespace


def namespace_arg(value: str) -> str:
    if not is_namespace(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid namespace: {NAMESPACE_RULE}")
    return value
