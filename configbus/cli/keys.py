"""`configbus keys create | list | show | update | revoke | rotate | import`: the namespace's
client key collection, through the admin service.

`create` and `rotate` print the key itself once (only its hash is stored; it cannot be
shown again). `import` moves the clients of head's document into the collection: it creates
an entry for each (same hash, name, models, rate limit, enabled), then publishes the
document without them, so each key works throughout (an entry exists before its client
goes). Run again, it picks up where it stopped.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from configbus.api import KeyCreateRequest, KeyUpdateRequest
from configbus.cli.args import duration_arg
from configbus.cli.common import EXIT_OK, EXIT_REFUSED, admin_client, admin_flags, print_json
from configbus.cli.text import table
from configbus.clientkeys import ClientKey
from configbus.errors import AdminApiError, ConfigBusError
from configbus.escape import printable
from configbus.tooling.client import AdminClient

T = TypeVar("T")
LIST_PAGE = 500
# `import` waits out the admin's write rate limit for at most this long per key.
MAX_RATE_WAIT_S = 120.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "keys",
        help="client keys: create, list, show, update, revoke, rotate, import",
        description="The namespace's client key collection (keys live beside the document).",
    )
    inner = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> Any:
        q = inner.add_parser(name, help=help_, description=help_)
        admin_flags(q, fn)
        return q

    q = add("create", cmd_create, "create a key: generated and printed once, or from a hash")
    q.add_argument("name", metavar="NAME", help="who or what the key is for")
    q.add_argument("--key-sha256", metavar="HEX", help="the sha256 of a key you made yourself")
    q.add_argument("--id", help="the key's id (key_...); chosen by the service when absent")
    _entry_flags(q)
    q = add("list", cmd_list, "list keys (never the keys themselves), by team or tag")
    q.add_argument("--team", help="only keys of this team")
    q.add_argument("--tag", help="only keys with this tag")
    q.add_argument("--limit", type=int, default=100, help="show at most this many (default 100)")
    q.add_argument("--cursor", help="start where a previous listing stopped")
    q = add("show", cmd_show, "show one key's entry")
    q.add_argument("id", metavar="ID")
    q = add("update", cmd_update, "change a key's fields (the others are kept)")
    q.add_argument("id", metavar="ID")
    q.add_argument("--name", help="a new name")
    _entry_flags(q)
    for flag, help_ in (
        ("--no-team", "clear its team"),
        ("--no-rate-limit", "clear its rate limit"),
        ("--no-budget", "clear its budget"),
        ("--no-expiry", "clear its expiry"),
    ):
        q.add_argument(flag, action="store_true", help=help_)
    q.add_argument("--enable", action="store_true", help="enable it again")
    _if_match(q)
    q = add("revoke", cmd_revoke, "revoke a key: it answers 401 on every replica")
    q.add_argument("id", metavar="ID")
    _if_match(q)
    q = add("rotate", cmd_rotate, "a new key for ID, printed once; the old one works --grace more")
    q.add_argument("id", metavar="ID")
    q.add_argument(
        "--grace",
        type=duration_arg,
        default=0.0,
        metavar="DURATION",
        help="how long the old key keeps working (10m, 24h; default 0: it stops now)",
    )
    _if_match(q)
    q = add(
        "import",
        cmd_import,
        "move the clients of head's document into the key collection (entries first, then "
        "the document without them: no key stops working)",
    )
    q.add_argument("--dry-run", action="store_true", help="say what would be done, do nothing")
    q.add_argument("-m", "--message", default="", help="the document version's message")


def _entry_flags(q: argparse.ArgumentParser) -> None:
    q.add_argument("--model", action="append", dest="models", metavar="MODEL",
                   help="a model it may use (repeat; default every model: *)")  # fmt: skip
    q.add_argument("--team", help="its team (team budgets apply)")
    q.add_argument("--tag", action="append", dest="tags", metavar="TAG", help="a tag (repeat)")
    q.add_argument("--meta", action="append", metavar="KEY=VALUE", help="metadata (repeat)")
    q.add_argument("--rpm", type=int, help="its rate limit: requests per minute")
    q.add_argument("--tpm", type=int, help="its rate limit: tokens per minute")
    q.add_argument("--budget", type=float, metavar="USD", help="its spend limit in US dollars")
    q.add_argument("--budget-period", choices=("day", "month", "total"), default="month")
    q.add_argument("--expires-in", type=duration_arg, metavar="DURATION",
                   help="it answers 401 after this long (e.g. 720h)")  # fmt: skip
    q.add_argument("--disable", action="store_true", help="disabled: it answers 401")


def _if_match(q: argparse.ArgumentParser) -> None:
    q.add_argument("--if-match", type=int, metavar="REV", help="only if the key's revision is REV")


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    """The entry flags given, as request fields."""
    out: dict[str, Any] = {}
    if args.models:
        out["models"] = [m for arg in args.models for m in arg.split(",") if m]
    if args.team:
        out["team"] = args.team
    if args.tags:
        out["tags"] = args.tags
    if args.meta:
        meta = {}
        for item in args.meta:
            k, sep, v = item.partition("=")
            if not sep or not k:
                raise ConfigBusError(f"--meta {item!r}: expected KEY=VALUE")
            meta[k] = v
        out["metadata"] = meta
    if args.rpm is not None or args.tpm is not None:
        out["rate_limit"] = {k: v for k, v in (("rpm", args.rpm), ("tpm", args.tpm)) if v}
    if args.budget is not None:
        out["budget"] = {"limit_usd": args.budget, "period": args.budget_period}
    if args.expires_in is not None:
        out["expires_at"] = round(time.time() + args.expires_in, 3)
    if args.disable:
        out["enabled"] = False
    return out


def _request(type_: type[T], fields: dict[str, Any]) -> T:
    """The request checked here first: a bad flag fails before anything is sent."""
    try:
        return msgspec.convert(fields, type_)
    except msgspec.ValidationError as exc:
        raise ConfigBusError(f"invalid key: {exc}") from None


def _print_issued(args: argparse.Namespace, what: str, entry: ClientKey, key: str | None) -> None:
    if args.json:
        print_json({"key": key, "entry": msgspec.to_builtins(entry)})
        return
    print(printable(f"{what} key {entry.id} ({entry.name}), revision {entry.revision}"))
    if key is not None:
        print(f"  key: {key}")
        print("  (shown this once: only its hash is stored)", file=sys.stderr)


def cmd_create(args: argparse.Namespace) -> int:
    fields = {"name": args.name, **_fields(args)}
    if args.key_sha256:
        fields["key_sha256"] = args.key_sha256
    if args.id:
        fields["id"] = args.id
    req = _request(KeyCreateRequest, fields)
    with admin_client(args) as c:
        res = c.create_key(req)
    _print_issued(args, "created", res.entry, res.key)
    return EXIT_OK


def _state(e: ClientKey, now: float) -> str:
    if not e.enabled:
        return "disabled"
    if e.expires_at is not None and now >= e.expires_at:
        return "expired"
    if e.previous_expires_at is not None and now < e.previous_expires_at:
        return "rotating"
    return "enabled"


def cmd_list(args: argparse.Namespace) -> int:
    found: list[ClientKey] = []
    cursor = args.cursor
    with admin_client(args) as c:
        while len(found) < args.limit:
            page = c.keys(
                cursor=cursor, count=min(LIST_PAGE, args.limit - len(found)),
                team=args.team, tag=args.tag,
            )  # fmt: skip
            found += page.keys
            cursor = page.next_cursor
            if cursor is None:
                break
    if args.json:
        print_json({"keys": msgspec.to_builtins(found), "next_cursor": cursor})
        return EXIT_OK
    now = time.time()
    rows = [["ID", "NAME", "TEAM", "TAGS", "MODELS", "PREFIX", "STATE", "REV"]]
    for e in found:
        rows.append([e.id, e.name, e.team or "-", ",".join(e.tags) or "-", ",".join(e.models),
                     e.key_prefix or "-", _state(e, now), str(e.revision)])  # fmt: skip
    print(table(rows) if found else "no keys")
    if cursor is not None:
        print(f"more: --cursor {cursor}", file=sys.stderr)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        e = c.key(args.id)
    if args.json:
        print_json(e)
        return EXIT_OK
    shown = msgspec.to_builtins(e)
    shown["state"] = _state(e, time.time())
    width = max(map(len, shown))
    for k, v in shown.items():
        print(printable(f"{k.ljust(width)}  {v}"))
    return EXIT_OK


def cmd_update(args: argparse.Namespace) -> int:
    fields = _fields(args)
    if args.name:
        fields["name"] = args.name
    for flag, field in (("no_team", "team"), ("no_rate_limit", "rate_limit"),
                        ("no_budget", "budget"), ("no_expiry", "expires_at")):  # fmt: skip
        if getattr(args, flag):
            if field in fields:
                raise ConfigBusError(f"--{flag.replace('_', '-')} and a new {field}: pick one")
            fields[field] = None
    if args.enable:
        if args.disable:
            raise ConfigBusError("--enable and --disable: pick one")
        fields["enabled"] = True
    if not fields:
        raise ConfigBusError("nothing to change: give at least one flag")
    req = _request(KeyUpdateRequest, fields)
    with admin_client(args) as c:
        e = c.update_key(args.id, req, if_match=args.if_match)
    if args.json:
        print_json(e)
    else:
        print(printable(f"updated key {e.id} ({e.name}): {', '.join(sorted(fields))}; "
                        f"revision {e.revision}"))  # fmt: skip
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.revoke_key(args.id, if_match=args.if_match)
    if args.json:
        print_json(res)
    else:
        print(f"revoked key {res.id} (collection revision {res.revision})")
    return EXIT_OK


def cmd_rotate(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.rotate_key(args.id, grace_s=args.grace, if_match=args.if_match)
    _print_issued(args, "rotated", res.entry, res.key)
    if not args.json:
        grace = "stops now" if not args.grace else f"works {args.grace:g}s more"
        print(f"  the old key {grace}")
    return EXIT_OK


def import_id(key_sha256: str) -> str:
    """The id a client of the document gets: from its hash, so a second run finds it."""
    return "key_" + key_sha256[:24]


def _retrying(fn: Callable[[], T]) -> T:
    """`fn()`, waiting out the admin's write rate limit (429) for a while."""
    deadline = time.monotonic() + MAX_RATE_WAIT_S
    while True:
        try:
            return fn()
        except AdminApiError as exc:
            wait = float(exc.retry_after) if exc.retry_after and exc.retry_after.isdigit() else 1.0
            if exc.code != "rate_limited" or time.monotonic() + wait > deadline:
                raise
            print(f"  rate limited by the admin: waiting {wait:g}s", file=sys.stderr)
            time.sleep(wait)


def _adopt(c: AdminClient, client: dict[str, Any], version: int) -> tuple[str, str]:
    """Create the entry for one client of the document: (what happened, the key's id)."""
    fields: dict[str, Any] = {k: client[k] for k in ("name", "key_sha256", "models", "rate_limit", "enabled")
              if k in client}  # fmt: skip
    key_id = import_id(client["key_sha256"])
    req = _request(
        KeyCreateRequest,
        {**fields, "id": key_id, "adopt": True,
         "metadata": {"imported_from": f"document version {version}"}},
    )  # fmt: skip
    try:
        _retrying(lambda: c.create_key(req))
        return "created", key_id
    except AdminApiError as exc:
        if exc.code == "key_exists" and c.key(key_id).key_sha256 == client["key_sha256"]:
            return "already imported", key_id
        if exc.code == "key_hash_taken":
            owner = exc.message.rsplit(" ", 1)[-1]
            return "already in the collection", owner
        raise


def cmd_import(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        head = c.get()
        clients: list[dict[str, Any]] = list(head.document.get("clients") or [])
        if not clients:
            print(f"nothing to import: version {head.version} has no clients")
            return EXIT_OK
        if args.dry_run:
            for cl in clients:
                print(printable(f"would move client {cl['name']!r} to key "
                                f"{import_id(cl['key_sha256'])}"))  # fmt: skip
            print(f"then publish version {head.version}'s document without its clients")
            return EXIT_OK
        moved: list[str] = []
        kept: list[dict[str, Any]] = []
        for cl in clients:
            try:
                what, key_id = _adopt(c, cl, head.version)
            except AdminApiError as exc:
                print(printable(f"client {cl['name']!r}: not moved: {exc}"), file=sys.stderr)
                kept.append(cl)
                continue
            moved.append(cl["key_sha256"])
            print(printable(f"client {cl['name']!r}: {what} as key {key_id}"))
        if not moved:
            print("no client moved: the document is unchanged", file=sys.stderr)
            return EXIT_REFUSED
        # Only now the document loses the clients: each has its entry already.
        message = args.message or f"keys import: {len(moved)} client(s) moved to the key collection"
        try:
            res = _retrying(
                lambda: c.patch({"clients": kept}, message=message, if_match=head.version)
            )
        except AdminApiError as exc:
            if exc.code != "version_conflict":
                raise
            print(
                f"the document changed meanwhile (now version {exc.current_version}): its "
                "clients stay for now; run `configbus keys import` again to finish",
                file=sys.stderr,
            )
            return EXIT_REFUSED
    left = f"; {len(kept)} client(s) stay in it (see above)" if kept else ""
    print(f"published version {res.version}: the document without the {len(moved)} moved "
          f"client(s){left}")  # fmt: skip
    return EXIT_REFUSED if kept else EXIT_OK
