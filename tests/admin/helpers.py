"""Shared pieces of the admin tests: tokens per role, settings, an in-process client and an
in-thread uvicorn server (for the CLI, which speaks real HTTP)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from admin.app import create_app
from admin.settings import AdminSettings
from configbus.crypto import generate_key
from configbus.settings import BusSettings
from tests.support import free_port, wait_for

SECRET_KEY = generate_key()
TOKENS: dict[str, tuple[str, str]] = {  # role → (token name, token)
    "viewer": ("vera", "viewer-token-0001"),
    "publisher": ("paul", "publisher-token-0001"),
    "sre": ("sam", "sre-token-0001"),
    "admin": ("ada", "admin-token-0001"),
}
TOKENS_ENV = ",".join(f"{name}:{role}:{tok}" for role, (name, tok) in TOKENS.items())


def auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role][1]}"}


def settings(redis_url: str, namespace: str = "default", **overrides: Any) -> AdminSettings:
    env = {
        "CONFIGBUS_ADMIN_TOKENS": TOKENS_ENV,
        "CONFIGBUS_REDIS_URL": redis_url,
        "CONFIGBUS_SECRET_KEYS": SECRET_KEY,
        "CONFIGBUS_NAMESPACE": namespace,
    }
    # Tests share one Redis and token names, so the rate limit (per token, global) is off
    # unless a test sets it.
    overrides.setdefault("publish_limit", 1_000_000)
    return AdminSettings.from_env(env, bus=BusSettings.from_env(env), **overrides)


class _WithState:
    """Hands the lifespan's state to each request, as a server would."""

    def __init__(self, app: Starlette, state: dict[str, Any]) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(self.state)}
        await self.app(scope, receive, send)


@contextlib.asynccontextmanager
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to `app` in-process, with its lifespan running."""
    async with app.router.lifespan_context(app) as state:
        transport = httpx.ASGITransport(app=_WithState(app, dict(state or {})))
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as c:
            yield c


@contextlib.contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Run `app` under uvicorn in a thread of this process; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=10, what="uvicorn in a thread")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def app_for(redis_url: str, namespace: str = "default", **overrides: Any) -> Starlette:
    return create_app(settings(redis_url, namespace, **overrides))
