"""`configbus up`: the whole local fleet in one command, stopped by Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from configbus.tooling.fleet import CANARY_LABELS, DEFAULT_PORT_BASE, Fleet, start_fleet


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "up",
        help="run a local fleet: Redis, admin, replicas, mock upstreams",
        description="Run a local fleet seeded with examples/fleet.yaml and print how to use it. "
        "Uses the Redis at CONFIGBUS_REDIS_URL when it answers, else starts redis-server, "
        "else an embedded fakeredis. Ctrl-C stops everything it started.",
    )
    p.add_argument("--replicas", type=int, default=3, help="proxy replicas (default 3)")
    p.add_argument(
        "--port-base",
        type=int,
        default=DEFAULT_PORT_BASE,
        help=f"admin on this port, mocks next, replicas after (default {DEFAULT_PORT_BASE}; "
        "0 = free ports)",
    )
    p.add_argument("--run-dir", type=Path, default=None, help="logs and tour files (./.configbus)")
    p.set_defaults(func=run)


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def _program() -> str:
    """How to call configbus from the user's shell."""
    here = Path(sys.executable).parent / "configbus"
    on_path = shutil.which("configbus")
    if on_path and Path(on_path).resolve() == here.resolve():
        return "configbus"
    if here.exists():
        try:
            return str(here.relative_to(Path.cwd()))
        except ValueError:
            return str(here)
    return f"{shlex.quote(sys.executable)} -m configbus"


def _rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def banner(fleet: Fleet) -> str:
    cb = _program()
    admin = fleet.child("admin").url
    first = next(c for c in fleet.children if c.name.startswith("replica-"))
    replica, canary = first.url, first.name
    rows = "\n".join(f"  {c.name:<11} {c.url:<26} pid {c.child.pid}" for c in fleet.children)
    chat = (
        f"curl -s {replica}/v1/chat/completions -H 'Authorization: Bearer {fleet.client_key}' "
        """-H 'Content-Type: application/json' """
        """-d '{"model": "chat", "messages": [{"role": "user", "content": "hi"}]}'"""
    )
    d = fleet.run_dir
    return f"""
configbus fleet is up.   Redis: {fleet.redis_kind}   namespace: {fleet.namespace}

{rows}

  admin token:  {fleet.admin_token}   (role admin)
  console:      {admin}/ui/
  log in once:  {fleet.login_url or "(no login link: enter the admin token)"}   (valid once, for a minute)
  client key:   {fleet.client_key}

The tour (in another terminal):
  $ export CONFIGBUS_ADMIN_URL={admin} CONFIGBUS_ADMIN_TOKEN={fleet.admin_token}
  $ {chat}
  # 1. publish a change (model chat moves from mock-a to mock-b)
  $ {cb} publish {_rel(d / "fleet-v2.yaml")} -m "route chat to mock-b"
  # 2. watch every replica converge on it
  $ {cb} watch
  # 3. a broken document is refused, with the path of the error
  $ {cb} publish {_rel(d / "broken.yaml")} -m "typo in a fallback"
  # 4. roll back to version 1
  $ {cb} rollback 1 -m "back to mock-a"
  $ {cb} status
  # 5. a valid change that breaks traffic (mock-a on a dead port, no fallback), canary
  #    first: {canary} carries {CANARY_LABELS}; its failing requests make the guard abort
  $ {cb} publish {_rel(d / "broken-provider.yaml")} -m "move mock-a" --canary {CANARY_LABELS} --bake 10s
  $ for i in $(seq 30); do {chat} -o /dev/null -w '%{{http_code}} '; done; echo
  $ {cb} watch
  $ {cb} rollout status

Logs: {_rel(d)}/*.log.   Ctrl-C stops the fleet.
"""


def run(args: argparse.Namespace) -> int:
    if args.replicas < 1:
        print("configbus up: --replicas must be at least 1", file=sys.stderr)
        return 2
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    fleet: Fleet | None = None
    try:
        fleet = start_fleet(replicas=args.replicas, port_base=args.port_base, run_dir=args.run_dir)
        print(banner(fleet), flush=True)
        while True:
            for c in fleet.children:
                if not c.child.running():
                    print(
                        f"configbus up: {c.name} exited with code {c.child.returncode}; "
                        f"see {_rel(c.log)}. Stopping the fleet.",
                        file=sys.stderr,
                    )
                    return 1
            time.sleep(0.5)
    except _Stop:
        print("\nstopping the fleet...", flush=True)
        return 0
    except (OSError, RuntimeError, TimeoutError) as exc:
        print(f"configbus up: {exc}", file=sys.stderr)
        return 1
    finally:
        # Ignore a second Ctrl-C while children are being stopped: none may be left behind.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        if fleet is not None:
            fleet.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
