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
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from configbus.api import ReplicaRow, Replicas, RolloutView
from configbus.cli import rollout as ro
from configbus.cli.args import namespace_arg
from configbus.cli.text import ago, table
from configbus.codec import guess_format, load_file, parse
from configbus.errors import AdminApiError, AdminUnreachable, ConfigBusError, InvalidDocument
from configbus.escape import printable
from configbus.names import DEFAULT_NAMESPACE
from configbus.rollout import RolloutState
from configbus.store import PublishResult
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
    p.set_defaults(func=lambda args: _run(fn, args))


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
    stages = ro.stages_from(args)
    guard = ro.guard_from(args) if stages else None
    data = _read(args.file)
    with _client(args) as c:
        if stages is None:
            res = c.publish(
                data,
                message=args.message,
                if_match=args.if_match,
                idempotency_key=args.idempotency_key,
            )
            return _published(args, res, "published")
        res = c.start_rollout(
            document=data,
            stages=stages,
            guard=guard,
            preflight=args.preflight,
            message=args.message,
            if_match=args.if_match,
            idempotency_key=args.idempotency_key,
        )
        return _rollout_started(args, c, res)


def cmd_patch(args: argparse.Namespace) -> int:
    stages = ro.stages_from(args)
    guard = ro.guard_from(args) if stages else None
    data = _read(args.file)
    with _client(args) as c:
        if stages is None:
            res = c.patch(
                data,
                message=args.message,
                if_match=args.if_match,
                idempotency_key=args.idempotency_key,
            )
            return _published(args, res, "patched")
        res = c.start_rollout(
            patch=data,
            stages=stages,
            guard=guard,
            preflight=args.preflight,
            message=args.message,
            if_match=args.if_match,
            idempotency_key=args.idempotency_key,
        )
        return _rollout_started(args, c, res)


def _rollout_started(args: argparse.Namespace, c: AdminClient, res: PublishResult) -> int:
    """Print a rollout's start as a publish is printed, plus its id and stages."""
    if res.outcome == "noop":
        return _published(args, res, "rollout")
    view = _latest_rollout(c)
    if view is not None and view.rollout.version != res.version:
        view = None  # an idempotent replay of a rollout that is no longer the latest
    if args.json:
        _print_json({**msgspec.to_builtins(res), "rollout": msgspec.to_builtins(view)})
    else:
        if res.outcome == "idempotent":
            print(f"already done: version {res.version} (same idempotency key)")
        print(ro.format_started(res, view))
    return EXIT_OK


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
            _print_json({"valid": True, "issues": [], "offline": True})
        else:
            print(f"valid: {args.file} ({n} secret{'s' if n != 1 else ''}; checked offline)")
        return EXIT_OK
    data = _read(args.file)
    with _client(args) as c:
        res = c.validate(data, probe=args.probe)
    if args.json:
        _print_json(res)
    else:
        probed = ", providers probed" if args.probe else ""
        print(f"valid: {args.file} (checked by {args.admin_url}{probed})")
    return EXIT_OK


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
    print(table(rows) if len(rows) > 1 else "no versions published")
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
    if s.damage:
        lines.append(printable(f"DAMAGED: {s.damage}"))
    staged = ro.staged_versions(res)
    if s.per_version:
        rows = [["VERSION", "LIVE REPLICAS"]]
        for v, n in sorted(s.per_version.items(), key=lambda kv: -int(kv[0])):
            mark = " (head)" if int(v) == s.head else " (rollout)" if int(v) in staged else ""
            rows.append([v + mark, str(n)])
        lines += ["", table(rows)]
    if res.replicas:
        rows = [["REPLICA", "STATE", "VERSION", "LABELS", "LAST SEEN", "NOTE"]]
        for r in res.replicas:
            notes = ["staged (a rollout's version)"] if r.staged else []
            if not r.alive:
                notes.append("DEAD (no heartbeat)")
            if r.rejected_version is not None:
                notes.append(f"rejected version {r.rejected_version}: {r.reason or '?'}")
            elif r.state == "rejected":
                notes.append(f"rejected: {r.reason or '?'}")
            if r.stale:
                notes.append("stale (serving a local copy)")
            labels = ",".join(f"{k}={v}" for k, v in sorted(r.labels.items())) or "-"
            rows.append(
                [
                    r.replica_id,
                    r.state,
                    str(r.version),
                    labels,
                    ago(r.last_seen),
                    "; ".join(notes),
                ]
            )
        lines += ["", table(rows)]
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


def rejecting(res: Replicas, version: int) -> list[ReplicaRow]:
    return [r for r in res.replicas if r.alive and r.rejected_version == version]


def rejecting_head(res: Replicas) -> list[ReplicaRow]:
    return rejecting(res, res.summary.head)


def _latest_rollout(c: AdminClient) -> RolloutView | None:
    """The namespace's rollout (running, or the last one ended); None when it never had one."""
    try:
        return c.rollout()
    except AdminApiError as exc:
        if exc.code == "no_rollout":
            return None
        raise


class _Watch:
    """One `configbus watch`: its client, deadline and output."""

    def __init__(self, args: argparse.Namespace, c: AdminClient, deadline: float) -> None:
        self.args, self.c, self.deadline = args, c, deadline
        self.last: object = None

    def say(self, key: object, line: str) -> None:
        """Print `line` when `key` differs from the last one said (not under --json)."""
        if not self.args.json and key != self.last:
            print(line, flush=True)
            self.last = key

    def done(self, result: str, code: int, res: Replicas, view: RolloutView | None) -> int:
        if self.args.json:
            extra = {"rollout": msgspec.to_builtins(view)} if view is not None else {}
            _print_json({"result": result, **extra, **msgspec.to_builtins(res)})
        return code

    def timed_out(self) -> bool:
        return time.monotonic() >= self.deadline

    def follow_rollout(self, view: RolloutView) -> int:
        """Until the rollout ends: aborted (or a replica rejecting its version) is 1; once
        promoted, the fleet must converge on the new head."""
        while True:
            r = view.rollout
            res = self.c.replicas()
            if r.state is RolloutState.ABORTED:
                if not self.args.json:
                    print(
                        f"rollout {r.id} aborted at stage {r.stage + 1} of {len(r.stages)}: "
                        f"{r.reason}\nversion {r.version} is not head; its replicas are back "
                        f"on version {res.summary.head}",
                        file=sys.stderr,
                    )
                return self.done("aborted", WATCH_ABORTED, res, view)
            if r.state is RolloutState.PROMOTED:
                self.say(("promoted", r.id), f"rollout {r.id} promoted: {r.reason}")
                return self.converge(view)
            bad = rejecting(res, r.version)
            if bad:
                if not self.args.json:
                    for row in bad:
                        print(
                            f"replica {row.replica_id} rejected version {r.version}: {row.reason}",
                            file=sys.stderr,
                        )
                return self.done("rejected", WATCH_REJECTED, res, view)
            self.say(*ro.progress(view))
            if self.timed_out():
                if not self.args.json:
                    print(
                        f"timeout after {self.args.timeout:g}s: rollout {r.id} still runs\n"
                        + ro.format_rollout(view),
                        file=sys.stderr,
                    )
                return self.done("timeout", WATCH_TIMEOUT, res, view)
            time.sleep(self.args.interval)
            view = self.c.rollout()

    def converge(self, view: RolloutView | None = None) -> int:
        """Until every live replica runs head (0), one rejects it (1) or time runs out (2)."""
        while True:
            res = self.c.replicas()
            s = res.summary
            spread = ", ".join(
                f"version {v}: {n} live"
                for v, n in sorted(s.per_version.items(), key=lambda kv: int(kv[0]))
            )
            line = f"head {s.head}: " + (spread or "no live replicas")
            self.say(line, line)
            bad = rejecting_head(res)
            if bad:
                if not self.args.json:
                    for r in bad:
                        print(
                            f"replica {r.replica_id} rejected version {s.head}: {r.reason}",
                            file=sys.stderr,
                        )
                return self.done("rejected", WATCH_REJECTED, res, view)
            if s.all_on_head and s.alive >= self.args.min_replicas:
                if not self.args.json:
                    print(f"converged: {s.alive} live replica(s) run version {s.head}")
                return self.done("converged", WATCH_CONVERGED, res, view)
            if self.timed_out():
                if not self.args.json:
                    print(
                        f"timeout after {self.args.timeout:g}s: not every live replica runs "
                        f"version {s.head}\n" + format_status(res),
                        file=sys.stderr,
                    )
                return self.done("timeout", WATCH_TIMEOUT, res, view)
            time.sleep(self.args.interval)


def cmd_watch(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        c = _client(args)
    except ConfigBusError as exc:
        _fail(args, exc)
        return WATCH_UNREACHABLE
    with c:
        try:
            view = _latest_rollout(c)
            head = c.replicas().summary.head
            # The rollout is the latest change while it runs, and once ended until a later
            # version exists (an aborted one stays above head; a promoted one is head).
            current = view is not None and (view.rollout.running or view.rollout.version >= head)
            if args.timeout is None:
                args.timeout = DEFAULT_WATCH_TIMEOUT_S
                if view is not None and view.rollout.running:
                    args.timeout += ro.bake_left(view.rollout, time.time())
            w = _Watch(args, c, started + args.timeout)
            if current and view is not None:
                return w.follow_rollout(view)
            return w.converge()
        except (AdminApiError, AdminUnreachable) as exc:
            _fail(args, exc)
            return WATCH_UNREACHABLE


def cmd_rollout(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.action == "promote":
            view = c.promote_rollout(message=args.message)
        elif args.action == "abort":
            view = c.abort_rollout(message=args.message)
        else:
            view = c.rollout()
    if args.json:
        _print_json(view)
    else:
        print(ro.format_rollout(view))
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.rotate_secrets(message=args.message)
    return _published(args, res, "secrets re-encrypted")


def cmd_audit(args: argparse.Namespace) -> int:
    with _client(args) as c:
        res = c.audit(count=args.count, actor=args.actor, action=args.action, outcome=args.outcome)
    if args.json:
        _print_json(res)
        return EXIT_OK
    rows = [["WHEN", "ACTOR", "ACTION", "OUTCOME", "DETAILS"]]
    for e in res.entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.ts))
        details = " ".join(f"{k}={v}" for k, v in sorted(e.fields.items()) if v)
        rows.append([when, e.actor, e.action, e.outcome, details])
    print(table(rows))
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
