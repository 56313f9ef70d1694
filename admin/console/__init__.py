"""The web console at `/ui`: plain ES modules and CSS served by the admin, using the admin
API with a session cookie. `console_routes()` mounts it; `SecurityHeaders` locks the pages
down (strict CSP, no frames); `Console` is what the lifespan sets as `Services.sessions`."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from admin.console.routes import console_routes
from admin.console.session import Console, Sessions

# No inline script or style anywhere: every script and sheet is a file under /ui/static.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds the console's security headers to every answer of the admin (the API's too:
    JSON is never meant to be framed or sniffed either)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in HEADERS if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


__all__ = ["CSP", "Console", "SecurityHeaders", "Sessions", "console_routes"]
