"""`configbus admin`: run the admin service (uvicorn) against the bus's Redis."""

from __future__ import annotations

import argparse
import logging

from configbus import variables as v
from configbus.cli.args import add_http_limit_flags, http_protocol
from configbus.logs import configure_logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "admin",
        help="run the admin service",
        description="Run the admin HTTP service. Reads "
        + ", ".join(var.name for var in v.read_by("admin"))
        + f" ({v.ADMIN_TOKENS.name}: 'name:role:token,...', roles viewer, publisher, sre, "
        "admin; a token may be 'sha256:<hex>'). See docs/deploy.md.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8700)
    p.add_argument("--redis-url", help=f"overrides {v.REDIS_URL.name}")
    p.add_argument("--tokens-file", help=f"overrides {v.ADMIN_TOKENS_FILE.name}")
    p.add_argument(
        "--publish-limit",
        type=int,
        help=f"write requests per token per window ({v.ADMIN_PUBLISH_LIMIT.name})",
    )
    p.add_argument(
        "--publish-window",
        type=int,
        help=f"rate limit window in seconds ({v.ADMIN_PUBLISH_WINDOW_S.name})",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    add_http_limit_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    import uvicorn

    from admin.app import create_app
    from admin.settings import AdminSettings
    from configbus.settings import BusSettings

    env = dict(os.environ)
    if args.tokens_file:
        env[v.ADMIN_TOKENS_FILE.name] = args.tokens_file
    bus = BusSettings.from_env(env, command="admin", redis_url=args.redis_url)
    settings = AdminSettings.from_env(
        env, bus=bus, publish_limit=args.publish_limit, publish_window_s=args.publish_window
    )
    app = create_app(settings)
    log_format = settings.log_format
    configure_logging(log_format, args.log_level.upper())
    logging.getLogger("admin").info(
        "admin service on http://%s:%d, %d token(s), secret keys: %s",
        args.host,
        args.port,
        len(settings.tokens),
        "yes" if bus.secret_keys else "none (documents with secrets will be refused)",
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        # JSON lines: uvicorn's loggers go through the root handler instead of their own.
        log_config=None if log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        lifespan="on",
        http=http_protocol(args),
    )
    return 0
