"""`configbus proxy`: run one proxy replica (uvicorn, uvloop, httptools)."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

from configbus import variables as v
from configbus.cli.args import add_http_limit_flags, http_protocol, label_arg, namespace_arg
from configbus.logs import configure_logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("proxy", help="run a proxy replica that follows the config bus")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--redis-url", help=f"env {v.REDIS_URL.name}")
    p.add_argument("--namespace", type=namespace_arg, help=f"env {v.NAMESPACE.name}")
    p.add_argument("--replica-id", help=f"env {v.REPLICA_ID.name} (default: host-pid)")
    p.add_argument(
        "--label",
        action="extend",
        type=label_arg,
        metavar="KEY=VALUE",
        help=f"a replica label, repeatable (replaces env {v.REPLICA_LABELS.name})",
    )
    p.add_argument(
        "--snapshot-path", type=Path, help=f"last-known-good file; env {v.SNAPSHOT_PATH.name}"
    )
    p.add_argument(
        "--reconcile-interval",
        type=float,
        dest="reconcile_interval_s",
        help=f"seconds; env {v.RECONCILE_INTERVAL_S.name}",
    )
    p.add_argument(
        "--max-body-bytes", type=int, help=f"413 above this; env {v.PROXY_MAX_BODY_BYTES.name}"
    )
    p.add_argument(
        "--graceful-timeout",
        type=float,
        dest="graceful_timeout_s",
        help="on SIGTERM, seconds to let requests in flight finish (streams included) before "
        f"they are cut; env {v.PROXY_GRACEFUL_TIMEOUT_S.name} (default "
        f"{v.PROXY_GRACEFUL_TIMEOUT_S.default:g}, the default provider timeout)",
    )
    p.add_argument(
        "--log-level",
        default="warning",
        help="uvicorn's log level until a config is applied; from then on the document's "
        "logging.level sets every logger of the replica",
    )
    add_http_limit_flags(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:

    import uvicorn

    from proxy.app import create_app
    from proxy.fastlane import ReplicaProtocol
    from proxy.settings import ProxySettings

    settings = ProxySettings.from_env(
        redis_url=args.redis_url,
        namespace=args.namespace,
        replica_id=args.replica_id,
        labels=dict(args.label) if args.label else None,
        snapshot_path=args.snapshot_path,
        reconcile_interval_s=args.reconcile_interval_s,
        max_body_bytes=args.max_body_bytes,
        graceful_timeout_s=args.graceful_timeout_s,
    )
    configure_logging(settings.log_format)
    uvicorn.run(
        functools.partial(create_app, settings),
        factory=True,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http=http_protocol(args, ReplicaProtocol),
        lifespan="on",
        access_log=False,
        log_level=args.log_level,
        # JSON lines: uvicorn's loggers go through the root handler instead of their own.
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        # Typed int, used as asyncio.wait_for's timeout: any number of seconds works.
        timeout_graceful_shutdown=settings.graceful_timeout_s,  # type: ignore[arg-type]
        proxy_headers=False,
    )
    return 0
