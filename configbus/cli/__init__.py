"""The `configbus` command: run the fleet's services, and talk to an admin service.

Each subcommand lives in a module of this package exposing `register(subparsers)`, which
adds its parser and sets `func` (returning an exit code) as a default.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from configbus.errors import ConfigBusError

# Order is the order of `configbus --help`.
_MODULES = (
    "up", "proxy", "admin", "mock", "client", "providers", "keys", "litellm", "migrate", "keygen",
    "usage",
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="configbus", description="A Redis-backed configuration bus for LLM proxy fleets."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _MODULES:
        importlib.import_module(f"configbus.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigBusError as exc:
        print(f"configbus {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
