"""The client subcommands: `configbus publish | get | patch | validate | history | diff |
rollback | status | watch | rotate-secrets | audit | export | import`, against an admin service.

Every command takes `--admin-url` (CONFIGBUS_ADMIN_URL), `--token` (CONFIGBUS_ADMIN_TOKEN),
`--namespace` (CONFIGBUS_NAMESPACE) and `--json` (machine-readable output). Errors name what
is wrong and exit non-zero: 1 when the service refused (invalid document, conflict, denied),
2 when the command could not run (bad file, service unreachable).

`configbus watch` exit codes: 0 every live replica runs head; 1 a live replica rejected head;
2 timeout before convergence; 3 the admin service could not be asked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from configbus.api import ReplicaRow, Replicas
from configbus.cli.args import namespace_arg
from configbus.codec import guess_format, load_file, parse
from configbus.errors import AdminApiError, AdminUnreachable, ConfigBusError, InvalidDocument
from configbus.names import DEFAULT_NAMESPACE
from configbus.store import PublishResult
from configbus.tooling.client import AdminClient

EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2
WATCH_CONVERGED, WATCH_REJECTED, WATCH_TIMEOUT, WATCH_UNREACHABLE = 0, 1, 2, 3

Command = Callable[[argparse.Namespace], int]


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def add(name: str, fn: Command, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
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
        p.set_defaults(func=lambda args: _run(fn, args))
        return p

    def writes(p: argparse.ArgumentParser) -> None:
        p.add_argument("-m", "--message", required=True, help="why (kept in history)")
        p.add_argument(
            "--if-match", type=int, metavar="N", help="refuse unless N is the current version"
        )
        p.add_argument("--idempotency-key", help="a retry with the same key is not repeated")

    p = add("publish", cmd_publish, "publish a document file (JSON, YAML or TOML)")
    p.add_argument("file")
    writes(p)
    p = add("get", cmd_get, "print the current document (secrets masked)")
    p.add_argument("--version", type=int, help="a past version instead of head")
    p.add_argument(
        "-o", "--output", help="write the document to this file (YAML for .yaml/.yml, else JSON)"
    )
    p = add("patch", cmd_patch, "publish a JSON merge patch (RFC 7396) of the current document")
    p.add_argument("file")
    writes(p)
    p = add("validate", cmd_validate, "check a document file; offline without an admin URL")
    p.add_argument("file")
    p.add_argument("--offline", action="store_true", help="check locally, do not ask the admin")
    p = add("history", cmd_history, "list versions, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--before", type=int, help="only versions older than this")
    p = add("diff", cmd_diff, "unified diff between two versions")
    p.add_argument("a", type=int)
    p.add_argument("b", type=int)
    p = add("rollback", cmd_rollback, "publish version N's body again as a new version")
    p.add_argument("version", type=int)
    writes(p)
    add("status", cmd_status, "rollout status: replicas per version, rejected and dead ones")
    p = add(
        "watch",
        cmd_watch,
        "follow a rollout until every live replica runs head; exit 0 "
        "converged, 1 a replica rejected head, 2 timeout, 3 admin unreachable",
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")
    p.add_argument("--interval", type=float, default=0.5, help="poll interval in seconds")
    p.add_argument(
        "--min-replicas",
        type=int,
        default=1,
        help="live replicas needed to call it converged (default 1)",
    )
    p = add(
        "rotate-secrets", cmd_rotate, "re-encrypt every secret with the newest key (a new version)"
    )
    p.add_argument("-m", "--message", default="", help="why (kept in history)")
    p = add("audit", cmd_audit, "recent audit entries, newest first")
    p.add_argument("--count", type=int, default=30)
    p = add("export", cmd_export, "export every retained version (secrets stay encrypted)")
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p = add("import", cmd_import, "re-seed an empty namespace from an export file")
    p.add_argument("file")


def _run(fn: Command, args: argparse.Namespace) -> int:
    try:
        return fn(args)
    except AdminApiError as exc:
        _fail(args, exc)
        return EXIT_REFUSED
    except InvalidDocument as exc:
        _fail(args, exc)
        return EXIT_REFUSED
    except (AdminUnreachable, ConfigBusError, OSError) as exc:
        _fail(args, exc)
        return EXIT_ERROR


def _fail(args: argparse.Namespace, exc: Exception) -> None:
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


def _client(args: argparse.Namespace) -> AdminClient:
    if not args.admin_url:
        raise ConfigBusError("no admin URL: pass --admin-url or set CONFIGBUS_ADMIN_URL")
    if not args.token:
        raise ConfigBusError("no token: pass --token or set CONFIGBUS_ADMIN_TOKEN")
    return AdminClient(args.admin_url, token=args.token, namespace=args.namespace)


def _read(path: str) -> Any:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigBusError(f"{p}: cannot read: {exc.strerror}") from None
    return parse(raw, guess_format(p.name), source=str(p))


def _print_json(data: Any) -> None:
    print(_json_text(data), end="")


def _json_text(data: Any) -> str:
    """An answer as the service sent it (a struct back to JSON), sorted for people."""
    return json.dumps(msgspec.to_builtins(data), indent=2, sort_keys=True) + "\n"


def _published(args: argparse.Namespace, res: PublishResult, what: str) -> int:
    if args.json:
        _print_json(res)
    elif res.outcome == "created":
        print(f"{what}: version {res.version} (sha256 {res.sha256[:12]})")
    elif res.outcome == "noop":
        print(f"no change: version {res.version} already holds this document")
    else:
        print(f"already done: version {res.version} (same idempotency key)")
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    data = _read(args.file)
    with _client(args) as c:
        res = c.publish(
            data, message=args.message, if_match=args.if_match, idempotency_key=args.idempotency_key
        )
    return _published(args, res, "published")


def cmd_patch(args: argparse.Namespace) -> int:
    data = _read(args.file)
    with _client(args) as c:
        res = c.patch(
            data, message=args.message, if_match=args.if_match, idempotency_key=args.idempotency_key
        )
    return _published(args, res, "patched")


def cmd_rollback(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.rollback(
            args.version,
            message=args.message,
            if_match=args.if_match,
            idempotency_key=args.idempotency_key,
        )
    return _published(args, res, f"rolled back to the body of version {args.version}")


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.version(args.version) if args.version else c.get()
    shown = msgspec.to_builtins(res) if args.json else res.document
    text = _json_text(shown)
    if args.output:
        if guess_format(args.output) == "yaml":
            import yaml

            text = yaml.safe_dump(shown, sort_keys=True)
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    if not args.json:
        print(
            f"# namespace {res.namespace} version {res.version} ({res.kind} by "
            f"{res.author}): {res.message}",
            file=sys.stderr,
        )
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    if args.offline or not args.admin_url:
        doc = load_file(args.file)  # InvalidDocument → every issue, exit 1
        from configbus.crypto import secrets_of

        n = len(secrets_of(doc))
        if args.json:
            _print_json({"valid": True, "issues": [], "offline": True})
        else:
            print(f"valid: {args.file} ({n} secret{'s' if n != 1 else ''}; checked offline)")
        return EXIT_OK
    data = _read(args.file)
    with _client(args) as c:
        res = c.validate(data)
    if args.json:
        _print_json(res)
    else:
        print(f"valid: {args.file} (checked by {args.admin_url})")
    return EXIT_OK


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    s = max(0.0, time.time() - ts)
    return (
        f"{s:.0f}s ago" if s < 120 else f"{s / 60:.0f}m ago" if s < 7200 else f"{s / 3600:.0f}h ago"
    )


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def cmd_history(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.versions(limit=args.limit, before=args.before)
    if args.json:
        _print_json(res)
        return EXIT_OK
    rows = [["VERSION", "KIND", "AUTHOR", "WHEN", "MESSAGE"]]
    for v in res.versions:
        kind = v.kind + (f" of {v.source}" if v.source else "")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v.created_at))
        rows.append([str(v.version), kind, v.author, when, v.message])
    print(_table(rows) if len(rows) > 1 else "no versions published")
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.diff(args.a, args.b)
    if args.json:
        _print_json(res)
    elif not res.changes:
        print(f"versions {args.a} and {args.b} hold the same document")
    else:
        sys.stdout.write(res.unified)
    return EXIT_OK


def format_status(res: Replicas) -> str:
    s = res.summary
    lines = [
        f"head: version {s.head} (epoch {s.epoch or '-'})  "
        f"replicas: {s.alive} live, {s.dead} dead, {s.rejected} rejecting  "
        + ("all live replicas on head" if s.all_on_head else "NOT all on head")
    ]
    if s.per_version:
        rows = [["VERSION", "LIVE REPLICAS"]]
        for v, n in sorted(s.per_version.items(), key=lambda kv: -int(kv[0])):
            rows.append([v + (" (head)" if int(v) == s.head else ""), str(n)])
        lines += ["", _table(rows)]
    if res.replicas:
        rows = [["REPLICA", "STATE", "VERSION", "LAST SEEN", "NOTE"]]
        for r in res.replicas:
            notes = []
            if not r.alive:
                notes.append("DEAD (no heartbeat)")
            if r.rejected_version is not None:
                notes.append(f"rejected version {r.rejected_version}: {r.reason or '?'}")
            elif r.state == "rejected":
                notes.append(f"rejected: {r.reason or '?'}")
            if r.stale:
                notes.append("stale (serving a local copy)")
            rows.append(
                [r.replica_id, r.state, str(r.version), _ago(r.last_seen), "; ".join(notes)]
            )
        lines += ["", _table(rows)]
    else:
        lines.append("no replica has reported")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.replicas()
    if args.json:
        _print_json(res)
    else:
        print(format_status(res))
    return EXIT_OK


def rejecting_head(res: Replicas) -> list[ReplicaRow]:
    head = res.summary.head
    return [r for r in res.replicas if r.alive and r.rejected_version == head]


def cmd_watch(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    try:
        c = _client(args)
    except ConfigBusError as exc:
        _fail(args, exc)
        return WATCH_UNREACHABLE
    last = ""
    with c:
        while True:
            try:
                res = c.replicas()
            except (AdminApiError, AdminUnreachable) as exc:
                _fail(args, exc)
                return WATCH_UNREACHABLE
            s = res.summary
            spread = ", ".join(
                f"version {v}: {n} live"
                for v, n in sorted(s.per_version.items(), key=lambda kv: int(kv[0]))
            )
            line = f"head {s.head}: " + (spread or "no live replicas")
            if not args.json and line != last:
                print(line, flush=True)
                last = line
            bad = rejecting_head(res)
            if bad:
                if args.json:
                    _print_json({"result": "rejected", **msgspec.to_builtins(res)})
                else:
                    for r in bad:
                        print(
                            f"replica {r.replica_id} rejected version {s.head}: {r.reason}",
                            file=sys.stderr,
                        )
                return WATCH_REJECTED
            if s.all_on_head and s.alive >= args.min_replicas:
                if args.json:
                    _print_json({"result": "converged", **msgspec.to_builtins(res)})
                else:
                    print(f"converged: {s.alive} live replica(s) run version {s.head}")
                return WATCH_CONVERGED
            if time.monotonic() >= deadline:
                if args.json:
                    _print_json({"result": "timeout", **msgspec.to_builtins(res)})
                else:
                    print(
                        f"timeout after {args.timeout:g}s: not every live replica runs "
                        f"version {s.head}\n" + format_status(res),
                        file=sys.stderr,
                    )
                return WATCH_TIMEOUT
            time.sleep(args.interval)


def cmd_rotate(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.rotate_secrets(message=args.message)
    return _published(args, res, "secrets re-encrypted")


def cmd_audit(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.audit(count=args.count)
    if args.json:
        _print_json(res)
        return EXIT_OK
    rows = [["WHEN", "ACTOR", "ACTION", "OUTCOME", "DETAILS"]]
    for e in res.entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.ts))
        details = " ".join(f"{k}={v}" for k, v in sorted(e.fields.items()) if v)
        rows.append([when, e.actor, e.action, e.outcome, details])
    print(_table(rows))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.export()
    text = _json_text(res)
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
    with _client(args) as c:
        res = c.import_(data)
    if args.json:
        _print_json(res)
    else:
        print(f"imported {res.versions} version(s); head is version {res.head}")
    return EXIT_OK
