"""Console sessions: an admin token exchanged once for a short-lived, revocable cookie.

A session id lives only in the browser's HttpOnly, SameSite=Strict cookie; Redis keeps the
sha256 of it (so a Redis reader cannot replay one) with an idle TTL, under an absolute
lifetime. A session names its token (name and digest): a token removed or changed in the
admin's settings ends every session made from it. Writes made with the cookie carry a CSRF
token twice (a readable cookie and a header) that must both equal the one bound to the
session. One-time login codes (for `configbus up`'s link) are stored the same way, valid once
(GETDEL) and for a minute.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
from starlette.requests import Request

from admin.answers import ApiError
from admin.http import Services
from admin.settings import Token
from configbus.errors import StoreError
from configbus.redis_calls import REDIS_ERRORS, store_error

T = TypeVar("T")
Guarded = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]

COOKIE = "cb_session"
CSRF_COOKIE = "cb_csrf"
CSRF_HEADER = "x-csrf-token"
IDLE_TTL_S = 30 * 60  # a session unused this long ends
MAX_AGE_S = 8 * 3600  # and none outlives this
LOGIN_CODE_TTL_S = 60
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PREFIX = "cb:ui:"  # sessions are admin-wide, not per namespace; single-key commands only


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """What Redis holds for one session (never the token, never the session id)."""

    name: str
    token_sha256: str
    csrf: str
    created: float


class LoginCode(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    token_sha256: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Sessions:
    """Creates, finds and ends console sessions; `authenticate` is the admin's cookie path."""

    def __init__(self, redis: aioredis.Redis, tokens: Iterable[Token], guarded: Guarded) -> None:
        self._redis = redis
        self._guarded = guarded  # the admin's circuit breaker around Redis
        self._tokens = {t.name: t for t in tokens}

    def _token(self, name: str, token_sha256: str) -> Token | None:
        token = self._tokens.get(name)
        if token is None or not hmac.compare_digest(token.sha256, token_sha256):
            return None
        return token

    async def create(self, token: Token) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(
            name=token.name,
            token_sha256=token.sha256,
            csrf=secrets.token_urlsafe(24),
            created=time.time(),
        )
        await self._call(
            lambda: self._redis.set(
                _PREFIX + "session:" + _digest(sid), msgspec.json.encode(session), ex=IDLE_TTL_S
            ),
            "create session",
        )
        return sid, session

    async def find(self, sid: str | None) -> tuple[Token, Session] | None:
        """The live session `sid` names (its idle TTL renewed), or None."""
        if not sid or len(sid) > 100:
            return None
        key = _PREFIX + "session:" + _digest(sid)
        raw = await self._call(lambda: self._redis.getex(key, ex=IDLE_TTL_S), "read session")
        if raw is None:
            return None
        try:
            session = msgspec.json.decode(raw, type=Session)
        except msgspec.DecodeError:
            return None
        token = self._token(session.name, session.token_sha256)
        if token is None or time.time() - session.created > MAX_AGE_S:
            await self._call(lambda: self._redis.delete(key), "end session")
            return None
        return token, session

    async def end(self, sid: str | None) -> None:
        if sid and len(sid) <= 100:
            await self._call(
                lambda: self._redis.delete(_PREFIX + "session:" + _digest(sid)), "end session"
            )

    async def mint_code(self, token: Token) -> str:
        code = secrets.token_urlsafe(24)
        value = msgspec.json.encode(LoginCode(name=token.name, token_sha256=token.sha256))
        await self._call(
            lambda: self._redis.set(_PREFIX + "login:" + _digest(code), value, ex=LOGIN_CODE_TTL_S),
            "mint login code",
        )
        return code

    async def redeem_code(self, code: str) -> Token | None:
        """The token a login code stands for; the code is gone afterwards, used or not."""
        if not code or len(code) > 100:
            return None
        raw = await self._call(
            lambda: self._redis.getdel(_PREFIX + "login:" + _digest(code)), "redeem"
        )
        if raw is None:
            return None
        try:
            c = msgspec.json.decode(raw, type=LoginCode)
        except msgspec.DecodeError:
            return None
        return self._token(c.name, c.token_sha256)

    async def authenticate(self, request: Request) -> tuple[Token | None, Exception | None]:
        """The token behind the request's session cookie, and the error to answer with
        instead when there is one (a write without the session's CSRF token, Redis down)."""
        sid = request.cookies.get(COOKIE)
        if not sid:
            return None, None
        try:
            found = await self.find(sid)
        except StoreError as exc:
            return None, exc
        if found is None:
            return None, None
        token, session = found
        if request.method not in SAFE_METHODS:
            header = request.headers.get(CSRF_HEADER, "")
            cookie = request.cookies.get(CSRF_COOKIE, "")
            if not (
                hmac.compare_digest(header.encode(), session.csrf.encode())
                and hmac.compare_digest(cookie.encode(), session.csrf.encode())
            ):
                return token, ApiError(
                    403,
                    "csrf_failed",
                    f"a write with the console session needs the {CSRF_HEADER} header",
                )
        return token, None

    async def _call(self, fn: Callable[[], Awaitable[T]], what: str) -> T:
        async def call() -> T:
            try:
                return await fn()
            except REDIS_ERRORS as exc:
                raise store_error(exc, what) from exc

        result: T = await self._guarded(call)
        return result


class Console:
    """The console's share of the admin's services: its sessions and open event streams.
    Set as `Services.sessions`, so the API's endpoints accept the cookie too."""

    def __init__(self, sessions: Sessions, *, max_streams: int = 64) -> None:
        self.sessions = sessions
        self.max_streams = max_streams
        self.streams = 0

    async def authenticate(self, request: Request) -> tuple[Token | None, Exception | None]:
        return await self.sessions.authenticate(request)


def console_of(svc: Services) -> Console:
    console = svc.sessions
    if not isinstance(console, Console):
        raise RuntimeError("the console is not set up in this admin (create_app does it)")
    return console
