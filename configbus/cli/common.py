"""What every client subcommand shares: exit codes, the admin client from the flags, and
how errors and JSON are printed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from configbus.api import RolloutView
from configbus.cli.args import namespace_arg
from configbus.codec import Format, guess_format, parse
from configbus.errors import AdminApiError, AdminUnreachable, ConfigBusError, InvalidDocument
from configbus.names import DEFAULT_NAMESPACE
from configbus.tooling.client import AdminClient

EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2
WATCH_CONVERGED, WATCH_REJECTED, WATCH_TIMEOUT, WATCH_UNREACHABLE = 0, 1, 2, 3
WATCH_PROMOTED, WATCH_ABORTED = WATCH_CONVERGED, WATCH_REJECTED
DEFAULT_WATCH_TIMEOUT_S = 60.0

Command = Callable[[argparse.Namespace], int]


def admin_flags(p: argparse.ArgumentParser, fn: Command) -> None:
    """The flags every command against an admin service takes, and `fn` to run."""
    p.add_argument(
        "--admin-url",
        default=os.environ.get("CONFIGBUS_ADMIN_URL"),
        help="admin service URL (CONFIGBUS_ADMIN_URL)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("CONFIGBUS_ADMIN_TOKEN"),
        help="bearer token (CONFIGBUS_ADMIN_TOKEN)",
    )
    p.add_argument(
        "--namespace",
        "-n",
        default=os.environ.get("CONFIGBUS_NAMESPACE", DEFAULT_NAMESPACE),
        type=namespace_arg,
        help=f"namespace (CONFIGBUS_NAMESPACE, default {DEFAULT_NAMESPACE!r})",
    )
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=lambda args: run_command(fn, args))


def run_command(fn: Command, args: argparse.Namespace) -> int:
    try:
        return fn(args)
    except AdminApiError as exc:
        fail(args, exc)
        return EXIT_REFUSED
    except InvalidDocument as exc:
        fail(args, exc)
        return EXIT_REFUSED
    except (AdminUnreachable, ConfigBusError, OSError) as exc:
        fail(args, exc)
        return EXIT_ERROR


def fail(args: argparse.Namespace, exc: Exception) -> None:
    if isinstance(exc, InvalidDocument):
        print(f"configbus {args.command}: invalid document:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return
    print(f"configbus {args.command}: {exc}", file=sys.stderr)
    if isinstance(exc, AdminApiError) and exc.code == "version_conflict":
        print(
            f"  the current version is {exc.current_version}: review it (configbus diff) "
            f"and retry with --if-match {exc.current_version}",
            file=sys.stderr,
        )


def admin_client(args: argparse.Namespace) -> AdminClient:
    if not args.admin_url:
        raise ConfigBusError("no admin URL: pass --admin-url or set CONFIGBUS_ADMIN_URL")
    if not args.token:
        raise ConfigBusError("no token: pass --token or set CONFIGBUS_ADMIN_TOKEN")
    return AdminClient(args.admin_url, token=args.token, namespace=args.namespace)


def read_input(path: str | Path, fmt: Format | None = None) -> Any:
    """A file's parsed data (format from its suffix unless given): ConfigBusError when it
    cannot be read, InvalidDocument when it does not parse."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigBusError(f"{p}: cannot read: {exc.strerror}") from None
    return parse(raw, fmt or guess_format(p.name), source=str(p))


def print_json(data: Any) -> None:
    print(json_text(data), end="")


def json_text(data: Any) -> str:
    """An answer as the service sent it (a struct back to JSON), sorted for people."""
    return json.dumps(msgspec.to_builtins(data), indent=2, sort_keys=True) + "\n"


def latest_rollout(c: AdminClient) -> RolloutView | None:
    """The namespace's rollout (running, or the last one ended); None when it never had one."""
    try:
        return c.rollout()
    except AdminApiError as exc:
        if exc.code == "no_rollout":
            return None
        raise
