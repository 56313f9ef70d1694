"""`configbus status` and `configbus watch`: where the fleet stands, and following the
namespace's latest change (a rollout to its end, else head) until it settles."""

from __future__ import annotations

import argparse
import sys
import time

import msgspec

from configbus.api import ReplicaRow, Replicas, RolloutView
from configbus.cli import rollout as ro
from configbus.cli.common import (
    DEFAULT_WATCH_TIMEOUT_S,
    EXIT_OK,
    WATCH_ABORTED,
    WATCH_CONVERGED,
    WATCH_REJECTED,
    WATCH_TIMEOUT,
    WATCH_UNREACHABLE,
    admin_client,
    fail,
    latest_rollout,
    print_json,
)
from configbus.cli.text import ago, table
from configbus.errors import AdminApiError, AdminUnreachable, ConfigBusError
from configbus.escape import printable
from configbus.rollout import RolloutState
from configbus.tooling.client import AdminClient


def format_status(res: Replicas) -> str:
    s = res.summary
    lines = [
        f"head: version {s.head} (epoch {s.epoch or '-'})  "
        f"replicas: {s.alive} live, {s.dead} dead, {s.rejected} rejecting  "
        + ("all live replicas on head" if s.all_on_head else "NOT all on head")
    ]
    if s.damage:
        lines.append(printable(f"DAMAGED: {s.damage}"))
    if s.slowest_replica is not None and s.slowest_propagation_s is not None:
        lines.append(
            printable(
                f"propagation of version {s.head}: slowest replica {s.slowest_replica} "
                f"({s.slowest_propagation_s * 1000:.1f} ms after the publish)"
            )
        )
    staged = ro.staged_versions(res)
    if s.per_version:
        rows = [["VERSION", "LIVE REPLICAS"]]
        for v, n in sorted(s.per_version.items(), key=lambda kv: -int(kv[0])):
            mark = " (head)" if int(v) == s.head else " (rollout)" if int(v) in staged else ""
            rows.append([v + mark, str(n)])
        lines += ["", table(rows)]
    if res.replicas:
        rows = [["REPLICA", "STATE", "VERSION", "KEYS REV", "LABELS", "LAST SEEN", "NOTE"]]
        newest_keys = max((r.keys_rev for r in res.replicas if r.alive), default=0)
        for r in res.replicas:
            notes = ["staged (a rollout's version)"] if r.staged else []
            if not r.alive:
                notes.append("DEAD (no heartbeat)")
            if r.rejected_version is not None:
                notes.append(f"rejected version {r.rejected_version}: {r.reason or '?'}")
            elif r.state == "rejected":
                notes.append(f"rejected: {r.reason or '?'}")
            if r.stale:
                notes.append("stale (serving a copy Redis has not confirmed)")
            if r.alive and r.keys_rev < newest_keys:
                notes.append(f"behind on client keys (revision {r.keys_rev} < {newest_keys})")
            if not r.staged and r.epoch == s.epoch and r.version > s.head:
                # Its version was lost by a failover; the next publish numbers above it.
                notes.append(f"AHEAD of head: version {r.version} is not in the store")
            labels = ",".join(f"{k}={v}" for k, v in sorted(r.labels.items())) or "-"
            rows.append(
                [
                    r.replica_id,
                    r.state,
                    str(r.version),
                    str(r.keys_rev),
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
    with admin_client(args) as c:
        res = c.replicas()
    if args.json:
        print_json(res)
    else:
        print(format_status(res))
    return EXIT_OK


def rejecting(res: Replicas, version: int) -> list[ReplicaRow]:
    return [r for r in res.replicas if r.alive and r.rejected_version == version]


def rejecting_head(res: Replicas) -> list[ReplicaRow]:
    return rejecting(res, res.summary.head)


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
            print_json({"result": result, **extra, **msgspec.to_builtins(res)})
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
                return self.rejected(bad, r.version, res, view)
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

    def rejected(
        self, bad: list[ReplicaRow], version: int, res: Replicas, view: RolloutView | None
    ) -> int:
        if not self.args.json:
            for row in bad:
                print(
                    f"replica {row.replica_id} rejected version {version}: {row.reason}",
                    file=sys.stderr,
                )
        return self.done("rejected", WATCH_REJECTED, res, view)

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
                return self.rejected(bad, s.head, res, view)
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
        c = admin_client(args)
    except ConfigBusError as exc:
        fail(args, exc)
        return WATCH_UNREACHABLE
    with c:
        try:
            view = latest_rollout(c)
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
            fail(args, exc)
            return WATCH_UNREACHABLE
