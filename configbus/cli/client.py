"""The client subcommands: `configbus publish | get | patch | validate | history | diff |
rollback | status | watch | rollout | rotate-secrets | audit | export | import`, against an
admin service.

Every command takes `--admin-url` (CONFIGBUS_ADMIN_URL), `--token` (CONFIGBUS_ADMIN_TOKEN),
`--namespace` (CONFIGBUS_NAMESPACE) and `--json` (machine-readable output). Errors name what
is wrong and exit non-zero: 1 when the service refused (invalid document, conflict, denied),
2 when the command could not run (bad file, service unreachable).

`publish` and `patch` with `--canary` start a rollout (configbus/cli/rollout.py). `configbus
watch` follows the namespace's latest change: a rollout to its end (0 promoted and every live
replica on the new head, 1 aborted or a replica rejected its version), else head until every
live replica runs it (0; 1 a live replica rejected head); 2 timeout; 3 the admin service could
not be asked.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import msgspec

from configbus.cli import rollout as ro
from configbus.cli.common import (
    DEFAULT_WATCH_TIMEOUT_S,
    EXIT_OK,
    Command,
    admin_client,
    admin_flags,
    json_text,
    latest_rollout,
    print_json,
    read_input,
)
from configbus.cli.text import table
from configbus.cli.watching import cmd_status, cmd_watch
from configbus.codec import guess_format, load_file
from configbus.errors import ConfigBusError
from configbus.escape import printable
from configbus.store import PublishResult
from configbus.tooling.client import AdminClient


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add(name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        admin_flags(p, fn)
        return p

    def writes(p: argparse.ArgumentParser) -> None:
        p.add_argument("-m", "--message", required=True, help="why (kept in history)")
        p.add_argument(
            "--if-match", type=int, metavar="N", help="refuse unless N is the current version"
        )
        p.add_argument("--idempotency-key", help="a retry with the same key is not repeated")

    p = add(
        "publish",
        cmd_publish,
        "publish a document file (JSON, YAML or TOML); with --canary, to stages of replicas first",
    )
    p.add_argument("file")
    writes(p)
    ro.add_canary_flags(p)
    p = add("get", cmd_get, "print the current document (secrets masked)")
    p.add_argument("--version", type=int, help="a past version instead of head")
    p.add_argument(
        "-o", "--output", help="write the document to this file (YAML for .yaml/.yml, else JSON)"
    )
    p = add("patch", cmd_patch, "publish a JSON merge patch (RFC 7396) of the current document")
    p.add_argument("file")
    writes(p)
    ro.add_canary_flags(p)
    p = add("validate", cmd_validate, "check a document file; offline without an admin URL")
    p.add_argument("file")
    p.add_argument("--offline", action="store_true", help="check locally, do not ask the admin")
    p.add_argument(
        "--probe",
        action="store_true",
        help="also ask each provider the file changes (against head) for its model list",
    )
    p = add("history", cmd_history, "list versions, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--before", type=int, help="only versions older than this")
    p = add("diff", cmd_diff, "unified diff between two versions")
    p.add_argument("a", type=int)
    p.add_argument("b", type=int)
    p = add("rollback", cmd_rollback, "publish version N's body again as a new version")
    p.add_argument("version", type=int)
    writes(p)
    add("status", cmd_status, "replicas per version, their labels, rejected and dead ones")
    p = add(
        "watch",
        cmd_watch,
        "follow the latest change: a running rollout to its end (exit 0 promoted and "
        "converged, 1 aborted or a replica rejected its version), else until every live "
        "replica runs head (0; 1 a replica rejected head); 2 timeout, 3 admin unreachable",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help=f"seconds (default {DEFAULT_WATCH_TIMEOUT_S:g}; for a running rollout, the bake "
        f"time it has left plus {DEFAULT_WATCH_TIMEOUT_S:g})",
    )
    p.add_argument("--interval", type=float, default=0.5, help="poll interval in seconds")
    p.add_argument(
        "--min-replicas",
        type=int,
        default=1,
        help="live replicas needed to call it converged (default 1)",
    )
    p = add(
        "rollout",
        cmd_rollout,
        "the namespace's rollout: status (with the guard's live figures), promote or abort",
    )
    p.add_argument("action", choices=("status", "promote", "abort"))
    p.add_argument("-m", "--message", default="", help="why (kept in the audit)")
    p = add(
        "rotate-secrets", cmd_rotate, "re-encrypt every secret with the newest key (a new version)"
    )
    p.add_argument("-m", "--message", default="", help="why (kept in history)")
    p = add(
        "audit",
        cmd_audit,
        "recent audit entries, newest first: the namespace's actions and the refusals that "
        "named it (sampled); successful reads are not audited",
    )
    p.add_argument("--count", type=int, default=30)
    p.add_argument("--actor", help="only this token name ('anonymous' for no token)")
    p.add_argument("--action", help="only this action (publish, rollback, get...)")
    p.add_argument("--outcome", help="only this outcome (created, forbidden, unauthorized...)")
    p = add("export", cmd_export, "export every retained version (secrets stay encrypted)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p = add("import", cmd_import, "re-seed an empty namespace from an export file")
    p.add_argument("file")


def _published(args: argparse.Namespace, res: PublishResult, what: str) -> int:
    if args.json:
        print_json(res)
    elif res.outcome == "created":
        print(f"{what}: version {res.version} (sha256 {res.sha256[:12]})")
    elif res.outcome == "noop":
        print(f"no change: version {res.version} already holds this document")
    else:
        print(f"already done: version {res.version} (same idempotency key)")
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    return _publish(args, patch=False)


def cmd_patch(args: argparse.Namespace) -> int:
    return _publish(args, patch=True)


def _publish(args: argparse.Namespace, *, patch: bool) -> int:
    """A full document (PUT) or a merge patch (PATCH); with --canary, a rollout of it."""
    stages = ro.stages_from(args)
    guard = ro.guard_from(args) if stages else None  # bad flags fail before any work
    data = read_input(args.file)
    writes = {
        "message": args.message,
        "if_match": args.if_match,
        "idempotency_key": args.idempotency_key,
    }
    with admin_client(args) as c:
        if stages is None:
            res = c.patch(data, **writes) if patch else c.publish(data, **writes)
            return _published(args, res, "patched" if patch else "published")
        body = {"patch": data} if patch else {"document": data}
        res = c.start_rollout(
            **body, stages=stages, guard=guard, preflight=args.preflight, **writes
        )
        return _rollout_started(args, c, res)


def _rollout_started(args: argparse.Namespace, c: AdminClient, res: PublishResult) -> int:
    """Print a rollout's start as a publish is printed, plus its id and stages."""
    if res.outcome == "noop":
        return _published(args, res, "rollout")
    view = latest_rollout(c)
    if view is not None and view.rollout.version != res.version:
        view = None  # an idempotent replay of a rollout that is no longer the latest
    if args.json:
        print_json({**msgspec.to_builtins(res), "rollout": msgspec.to_builtins(view)})
    else:
        if res.outcome == "idempotent":
            print(f"already done: version {res.version} (same idempotency key)")
        print(ro.format_started(res, view))
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.rollback(
            args.version,
            message=args.message,
            if_match=args.if_match,
            idempotency_key=args.idempotency_key,
        )
    return _published(args, res, f"rolled back to the body of version {args.version}")


def cmd_get(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.version(args.version) if args.version else c.get()
    shown = msgspec.to_builtins(res) if args.json else res.document
    text = json_text(shown)
    if args.output:
        if guess_format(args.output) == "yaml":
            import yaml

            text = yaml.safe_dump(shown, sort_keys=True)
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    if not args.json:
        print(
            printable(
                f"# namespace {res.namespace} version {res.version} ({res.kind} by "
                f"{res.author}): {res.message}"
            ),
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    if args.probe and (args.offline or not args.admin_url):
        raise ConfigBusError("--probe asks the admin service: pass --admin-url, not --offline")
    if args.offline or not args.admin_url:
        doc = load_file(args.file)  # InvalidDocument → every issue, exit 1
        from configbus.crypto import secrets_of

        n = len(secrets_of(doc))
        if args.json:
            print_json({"valid": True, "issues": [], "offline": True})
        else:
            print(f"valid: {args.file} ({n} secret{'s' if n != 1 else ''}; checked offline)")
        return EXIT_OK
    data = read_input(args.file)
    with admin_client(args) as c:
        res = c.validate(data, probe=args.probe)
    if args.json:
        print_json(res)
    else:
        probed = ", providers probed" if args.probe else ""
        print(f"valid: {args.file} (checked by {args.admin_url}{probed})")
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.versions(limit=args.limit, before=args.before)
    if args.json:
        print_json(res)
        return EXIT_OK
    rows = [["VERSION", "KIND", "AUTHOR", "WHEN", "MESSAGE"]]
    for v in res.versions:
        kind = v.kind + (f" of {v.source}" if v.source else "")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.created_at))
        rows.append([str(v.version), kind, v.author, when, v.message])
    print(table(rows) if len(rows) > 1 else "no versions published")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.diff(args.a, args.b)
    if args.json:
        print_json(res)
    elif not res.changes:
        print(f"versions {args.a} and {args.b} hold the same document")
    else:
        sys.stdout.write(res.unified)
    return EXIT_OK


def cmd_rollout(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        if args.action == "promote":
            view = c.promote_rollout(message=args.message)
        elif args.action == "abort":
            view = c.abort_rollout(message=args.message)
        else:
            view = c.rollout()
    if args.json:
        print_json(view)
    else:
        print(ro.format_rollout(view))
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.rotate_secrets(message=args.message)
    return _published(args, res, "secrets re-encrypted")


def cmd_audit(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.audit(count=args.count, actor=args.actor, action=args.action, outcome=args.outcome)
    if args.json:
        print_json(res)
        return EXIT_OK
    rows = [["WHEN", "ACTOR", "ACTION", "OUTCOME", "DETAILS"]]
    for e in res.entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.ts))
        details = " ".join(f"{k}={v}" for k, v in sorted(e.fields.items()) if v)
        rows.append([when, e.actor, e.action, e.outcome, details])
    print(table(rows))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.export()
    text = json_text(res)
    if args.output:
        Path(args.output).write_text(text)
        print(
            f"exported {len(res.records)} version(s), head {res.head}, to {args.output}",
            file=sys.stderr,
        )
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    try:
        data = json.loads(Path(args.file).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigBusError(f"{args.file}: cannot read an export: {exc}") from None
    with admin_client(args) as c:
        res = c.import_(data)
    if args.json:
        print_json(res)
    else:
        print(f"imported {res.versions} version(s); head is version {res.head}")
    return EXIT_OK
