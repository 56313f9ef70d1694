"""The console's own endpoints: its page and files, logging in and out, one-time login
codes, and YAML → JSON for the editor. Everything else the console does goes through the
admin API (`/v1/...`) with the session cookie, under the same roles and audit."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
import yaml
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from admin.answers import JSON, ApiError
from admin.auth import PERMISSIONS
from admin.console.events import events, who
from admin.console.session import (
    COOKIE,
    CSRF_COOKIE,
    IDLE_TTL_S,
    LOGIN_CODE_TTL_S,
    Session,
    Sessions,
    console_of,
)
from admin.http import Services, services
from admin.settings import Token
from configbus.codec import parse
from configbus.errors import InvalidDocument, StoreError

log = logging.getLogger("admin.console")
STATIC = Path(__file__).resolve().parent / "static"
MAX_TEXT_BYTES = 1_000_000
MAX_LINES = 20_000  # entries of the path → line map


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    token: str


class ParseRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    text: str


class SessionView(msgspec.Struct, frozen=True, kw_only=True):
    """Who the console is logged in as, what it may do, and where."""

    name: str
    role: str
    permissions: list[str]
    csrf: str
    namespace: str
    idle_ttl_s: int


class LoginCodeView(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    path: str
    expires_in_s: int


class Parsed(msgspec.Struct, frozen=True, kw_only=True):
    """A YAML (or JSON) text as JSON, and the line (1-based) each path starts on."""

    document: Any
    lines: dict[str, int]


def _view(svc: Services, token: Token, session: Session) -> SessionView:
    return SessionView(
        name=token.name,
        role=token.role,
        permissions=sorted(PERMISSIONS[token.role]),
        csrf=session.csrf,
        namespace=svc.settings.bus.namespace,
        idle_ttl_s=IDLE_TTL_S,
    )


def _with_cookies(response: Response, request: Request, sid: str, session: Session) -> Response:
    secure = request.url.scheme == "https"
    response.set_cookie(
        COOKIE, sid, max_age=IDLE_TTL_S, path="/", secure=secure, httponly=True, samesite="strict"
    )
    # Readable by the page (double submit): worthless without the HttpOnly session beside it.
    response.set_cookie(
        CSRF_COOKIE, session.csrf, max_age=IDLE_TTL_S, path="/", secure=secure, samesite="strict"
    )
    return response


async def _audit_login(svc: Services, actor: str, outcome: str, how: str) -> None:
    await svc.auditor.record(
        svc, svc.settings.bus.namespace, None, "ui_login", actor, outcome, via=how
    )


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})


async def to_index(request: Request) -> Response:
    return RedirectResponse("/ui/", status_code=308)


async def get_session(request: Request) -> Response:
    svc = services(request)
    try:
        found = await console_of(svc).sessions.find(request.cookies.get(COOKIE))
    except StoreError as exc:
        return ApiError(503, "store_unavailable", str(exc)).response()
    if found is None:
        return ApiError(401, "unauthorized", "not logged in").response()
    return JSON(_view(svc, *found), headers={"Cache-Control": "no-store"})


async def login(request: Request) -> Response:
    """Exchange an admin token (in the body, never the URL) for a session cookie."""
    svc = services(request)
    sessions = console_of(svc).sessions
    raw = await request.body()
    try:
        req = msgspec.json.decode(raw[:4096], type=LoginRequest)
    except msgspec.DecodeError:
        return ApiError(400, "bad_request", 'expected {"token": "..."}').response()
    client = request.client.host if request.client else "?"
    try:
        decision = await svc.guarded(lambda: svc.limiter.hit(f"ui-login@{client}"))
        if not decision.allowed:
            return ApiError(
                429,
                "rate_limited",
                "too many login attempts",
                headers={"Retry-After": str(decision.retry_after_s)},
            ).response()
        token = svc.tokens.lookup(f"Bearer {req.token}")
        if token is None:
            await _audit_login(svc, "anonymous", "unauthorized", "token")
            return ApiError(401, "unauthorized", "unknown admin token").response()
        sid, session = await sessions.create(token)
    except StoreError as exc:
        return ApiError(503, "store_unavailable", str(exc)).response()
    await _audit_login(svc, token.name, "ok", "token")
    return _with_cookies(JSON(_view(svc, token, session)), request, sid, session)


async def logout(request: Request) -> Response:
    svc = services(request)
    try:
        await console_of(svc).sessions.end(request.cookies.get(COOKIE))
    except StoreError as exc:
        return ApiError(503, "store_unavailable", str(exc)).response()
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


async def mint_login_code(request: Request) -> Response:
    """A one-time login link for the caller's own bearer token (what `configbus up` prints)."""
    svc = services(request)
    token = svc.tokens.lookup(request.headers.get("authorization"))
    if token is None:
        return ApiError(
            401,
            "unauthorized",
            "a bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        ).response()
    try:
        code = await console_of(svc).sessions.mint_code(token)
    except StoreError as exc:
        return ApiError(503, "store_unavailable", str(exc)).response()
    await svc.auditor.record(
        svc, svc.settings.bus.namespace, None, "ui_login_code", token.name, "ok"
    )
    view = LoginCodeView(code=code, path=f"/ui/login?code={code}", expires_in_s=LOGIN_CODE_TTL_S)
    return JSON(view, status_code=201, headers={"Cache-Control": "no-store"})


async def login_with_code(request: Request) -> Response:
    """Redeem a one-time code, then send the browser on without it in the address bar."""
    svc = services(request)
    sessions = console_of(svc).sessions
    try:
        token = await sessions.redeem_code(request.query_params.get("code", ""))
        if token is None:
            await _audit_login(svc, "anonymous", "unauthorized", "code")
            return RedirectResponse("/ui/#/login?expired", status_code=303)
        sid, session = await sessions.create(token)
    except StoreError:
        return RedirectResponse("/ui/#/login?unavailable", status_code=303)
    await _audit_login(svc, token.name, "ok", "code")
    return _with_cookies(RedirectResponse("/ui/", status_code=303), request, sid, session)


async def parse_text(request: Request) -> Response:
    """The editor's text as JSON with the strict parser the CLI uses, and where each path
    starts, so validation issues point at lines. Publishing still goes through the API."""
    token, refused = await who(request)
    if refused is not None:
        return refused
    assert token is not None
    raw = await request.body()
    if len(raw) > MAX_TEXT_BYTES:
        return ApiError(413, "body_too_large", f"text exceeds {MAX_TEXT_BYTES} bytes").response()
    try:
        text = msgspec.json.decode(raw, type=ParseRequest).text
        document = parse(text, "yaml", source="editor")
    except msgspec.DecodeError:
        return ApiError(400, "bad_request", 'expected {"text": "..."}').response()
    except InvalidDocument as exc:
        return ApiError(
            422, "invalid_yaml", "the text is not valid YAML", issues=exc.issues
        ).response()
    return JSON(Parsed(document=document, lines=line_map(text)))


def line_map(text: str) -> dict[str, int]:
    """Path (as issues spell it: `models[0].fallbacks[0]`) → the 1-based line it starts on."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    out: dict[str, int] = {}
    stack: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while stack and len(out) < MAX_LINES:
        node, path = stack.pop()
        if path not in out:
            out[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = str(key.value)
                sub = f"{path}.{name}" if path else name
                out[sub] = key.start_mark.line + 1
                stack.append((value, sub))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
    return out


def console_routes() -> list[BaseRoute]:
    return [
        Route("/ui", to_index, methods=["GET"]),
        Route("/ui/", index, methods=["GET"]),
        Route("/ui/login", login_with_code, methods=["GET"]),
        Route("/ui/api/session", get_session, methods=["GET"]),
        Route("/ui/api/session", login, methods=["POST"]),
        Route("/ui/api/session", logout, methods=["DELETE"]),
        Route("/ui/api/login-codes", mint_login_code, methods=["POST"]),
        Route("/ui/api/parse", parse_text, methods=["POST"]),
        Route("/v1/namespaces/{ns}/events", events, methods=["GET"]),
        Mount("/ui/static", app=StaticFiles(directory=STATIC), name="console-static"),
    ]


__all__ = ["Sessions", "console_routes", "line_map"]
