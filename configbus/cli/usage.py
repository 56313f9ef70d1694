"""`configbus usage`: requests, tokens and cost per key, model, provider or team over a time
range, as the replicas counted them (through the admin service, `GET .../usage`)."""

from __future__ import annotations

import argparse
import calendar
import re
import time

from configbus.api import USAGE_BUCKETS, USAGE_DIMENSIONS, UsageRow
from configbus.cli.common import EXIT_OK, admin_client, admin_flags, print_json
from configbus.cli.text import table

_SPAN = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def when(text: str, now: float | None = None) -> int:
    """Unix seconds from `1764547200`, `2026-11-30`, `2026-11-30T22:00[:00][Z]` (UTC), or a
    span back from now: `90m`, `24h`, `7d`."""
    now = time.time() if now is None else now
    text = text.strip()
    if text.isdigit():
        return int(text)
    span = _SPAN.match(text)
    if span:
        return int(now) - int(span[1]) * _UNITS[span[2]]
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return calendar.timegm(time.strptime(text.removesuffix("Z"), fmt))
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a time: unix seconds, 2026-11-30[T22:00[:00]][Z] (UTC), or 90m/24h/7d ago"
    )


def _groups(text: str) -> list[str]:
    groups = [g.strip() for g in text.split(",") if g.strip()]
    for g in groups:
        if g not in USAGE_DIMENSIONS:
            raise argparse.ArgumentTypeError(
                f"--group-by: {g!r} is not one of {', '.join(USAGE_DIMENSIONS)}"
            )
    return groups


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "usage",
        help="requests, tokens and cost per key, model, provider or team",
        description="Usage the replicas counted from the upstreams' reported tokens, and its "
        "cost at the deployments' prices, over a time range (default: the last 24 hours).",
    )
    p.add_argument("--from", dest="start", type=when, help="start (default: 24h before --to)")
    p.add_argument("--to", dest="end", type=when, help="end (default: now)")
    p.add_argument("--key", help="only this key (its id; a document client: its name)")
    p.add_argument("--model", help="only this public model")
    p.add_argument("--provider", help="only this provider")
    p.add_argument("--team", help="only this team")
    p.add_argument(
        "--group-by",
        type=_groups,
        default=["key"],
        help="comma-separated: key, model, provider, team (default: key)",
    )
    p.add_argument(
        "--bucket",
        choices=USAGE_BUCKETS,
        help="a row per UTC minute, hour or day (and group), over whole buckets",
    )
    admin_flags(p, cmd_usage)


def cmd_usage(args: argparse.Namespace) -> int:
    with admin_client(args) as c:
        res = c.usage(
            start=args.start,
            end=args.end,
            key=args.key,
            model=args.model,
            provider=args.provider,
            team=args.team,
            group_by=args.group_by,
            bucket=args.bucket,
        )
    if args.json:
        print_json(res)
        return EXIT_OK
    times = ["TIME"] if res.bucket else []
    dims = res.group_by or ([] if times else [""])  # a column for the TOTAL label
    rows = [times + [d.upper() for d in dims] + ["REQUESTS", "PROMPT", "COMPLETION", "COST USD"]]
    for r in res.rows:
        when_ = [_utc(r.t or 0, res.bucket)] if times else []
        rows.append(when_ + [getattr(r, d) or "-" for d in dims] + _counts(r))
    rows.append(["TOTAL"] + [""] * (len(times) + len(dims) - 1) + _counts(res.total))
    span = f"{_utc(res.from_)} to {_utc(res.to)}"
    print(f"usage of namespace {res.namespace}, {span}")
    print(table(rows))
    return EXIT_OK


def _counts(r: UsageRow) -> list[str]:
    return [
        str(r.requests),
        str(r.prompt_tokens),
        str(r.completion_tokens),
        f"{r.cost_micro_usd / 1e6:.6f}",
    ]


def _utc(ts: int, bucket: str | None = None) -> str:
    fmt = {"day": "%Y-%m-%d", "hour": "%Y-%m-%d %H:00Z", "minute": "%Y-%m-%d %H:%MZ"}
    return time.strftime(fmt.get(bucket or "", "%Y-%m-%d %H:%M:%SZ"), time.gmtime(ts))
