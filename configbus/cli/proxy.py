"""`configbus proxy`: run one proxy replica (uvicorn, uvloop, httptools)."""

from __future__ import annotations

import argparse
import functools
import os
from pathlib import Path

from configbus.cli.args import namespace_arg
from configbus.settings import env_float

# As long as the default provider `timeout_s`: a request in flight at SIGTERM may finish.
DEFAULT_GRACEFUL_TIMEOUT_S = 30.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("proxy", help="run a proxy replica that follows the config bus")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--redis-url", help="env CONFIGBUS_REDIS_URL")
    p.add_argument("--namespace", type=namespace_arg, help="env CONFIGBUS_NAMESPACE")
    p.add_argument("--replica-id", help="env CONFIGBUS_REPLICA_ID (default: host-pid)")
    p.add_argument(
        "--snapshot-path", type=Path, help="last-known-good file; env CONFIGBUS_SNAPSHOT_PATH"
    )
    p.add_argument(
        "--reconcile-interval",
        type=float,
        dest="reconcile_interval_s",
        help="seconds; env CONFIGBUS_RECONCILE_INTERVAL_S",
    )
    p.add_argument(
        "--max-body-bytes", type=int, help="413 above this; env CONFIGBUS_PROXY_MAX_BODY_BYTES"
    )
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=env_float(
            os.environ, "CONFIGBUS_PROXY_GRACEFUL_TIMEOUT_S", DEFAULT_GRACEFUL_TIMEOUT_S
        ),
        help="on SIGTERM, seconds to let requests in flight finish (streams included) before "
        f"they are cut; env CONFIGBUS_PROXY_GRACEFUL_TIMEOUT_S (default "
        f"{DEFAULT_GRACEFUL_TIMEOUT_S:g}, the default provider timeout)",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        help="uvicorn's log level until a config is applied; from then on the document's "
        "logging.level sets every logger of the replica",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from proxy.app import create_app
    from proxy.settings import ProxySettings

    settings = ProxySettings.from_env(
        redis_url=args.redis_url,
        namespace=args.namespace,
        replica_id=args.replica_id,
        snapshot_path=args.snapshot_path,
        reconcile_interval_s=args.reconcile_interval_s,
        max_body_bytes=args.max_body_bytes,
    )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        functools.partial(create_app, settings),
        factory=True,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=args.log_level,
        timeout_graceful_shutdown=args.graceful_timeout,
        proxy_headers=False,
    )
    return 0
