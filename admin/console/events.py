"""`GET /v1/namespaces/{ns}/events`: server-sent events telling the console what moved.

The stream carries hints, never data: `head` (version, epoch, sha256), `replicas` and
`rollout` (a fingerprint of what a person would see change). The page fetches the data
itself through the API, so what it shows always went through the same checks and roles.
It is fed by the change channel `cb:{ns}:changes` (a publish or a rollout step wakes it at
once) and by a poll every second (replicas converging publish nothing). A stream ends after
`STREAM_LIFETIME_S`, and the browser's EventSource reconnects: uvicorn waits for open
responses when it stops, and this keeps that wait shorter than a fleet's stop grace. The
stream itself is not audited (one entry per reconnect would flood the audit stream).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from admin.answers import ApiError, error_from
from admin.auth import allows
from admin.console.session import console_of
from admin.http import Services, services
from admin.settings import Token
from configbus.errors import StoreError
from configbus.names import NAMESPACE_RULE, is_namespace
from configbus.rollout_store import RolloutStore
from configbus.store import Store

STREAM_LIFETIME_S = 8.0
POLL_S = 1.0
RETRY_MS = 500


async def who(request: Request) -> tuple[Token | None, Response | None]:
    """The reader: a bearer token, else the session cookie; or the answer refusing it."""
    svc = services(request)
    token = svc.tokens.lookup(request.headers.get("authorization"))
    refused: Exception | None = None
    if token is None and "authorization" not in request.headers:
        token, refused = await console_of(svc).authenticate(request)
    if refused is not None:
        return None, error_from(refused, svc.breaker).response()
    if token is None:
        return None, ApiError(401, "unauthorized", "log in, or send a bearer token").response()
    if not allows(token.role, "read"):
        return None, ApiError(403, "forbidden", f"token {token.name!r} may not read").response()
    return token, None


async def events(request: Request) -> Response:
    svc = services(request)
    ns = request.path_params["ns"]
    if not is_namespace(ns):
        return ApiError(404, "invalid_namespace", f"namespace must be {NAMESPACE_RULE}").response()
    _, refused = await who(request)
    if refused is not None:
        return refused
    console = console_of(svc)
    if console.streams >= console.max_streams:
        return ApiError(
            503, "too_many_streams", "too many open event streams", headers={"Retry-After": "5"}
        ).response()
    return StreamingResponse(
        _stream(svc, svc.store(ns)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _event(kind: str, data: Any) -> str:
    return f"event: {kind}\ndata: {msgspec.json.encode(data).decode()}\n\n"


def _fingerprint(parts: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(parts)).hexdigest()[:16]


async def _state(store: Store) -> dict[str, Any]:
    """What the page shows, reduced to what changes it (heartbeat times left out)."""
    head = await store.head()
    infos = await store.replicas()
    rollout = await RolloutStore(store).get()
    replicas = [
        (
            i.status.replica_id, i.status.state, i.status.version, i.status.epoch,
            i.status.rejected_version, i.status.stale, i.status.staged, i.alive,
            sorted(i.status.labels.items()),
        )
        for i in infos
    ]  # fmt: skip
    moving: Any = None
    if rollout is not None:
        moving = [rollout.id, rollout.state.value, rollout.stage]
        if rollout.running:  # the guard's figures move with the traffic
            key = str(rollout.version)
            moving.append(
                [
                    (t.requests, t.errors)
                    for i in infos
                    if (t := i.status.traffic.get(key)) is not None
                ]
            )
    return {
        "head": {"version": head.version, "epoch": head.epoch, "sha256": head.sha256},
        "replicas": {"fingerprint": _fingerprint(replicas), "count": len(replicas)},
        "rollout": {
            "fingerprint": _fingerprint(moving),
            "running": bool(rollout and rollout.running),
        },
    }


async def _stream(svc: Services, store: Store) -> AsyncIterator[str]:
    console = console_of(svc)
    console.streams += 1
    pubsub = svc.redis.pubsub()
    try:
        try:
            await asyncio.wait_for(pubsub.subscribe(store.keys.changes), timeout=2)
            listening = True
        except Exception:  # the poll below still sees every change, a second later
            listening = False
        yield f"retry: {RETRY_MS}\n\n"
        last: dict[str, Any] = {}
        deadline = time.monotonic() + STREAM_LIFETIME_S
        next_poll = 0.0
        while time.monotonic() < deadline:
            hinted = False
            if listening:
                try:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.25)
                    hinted = msg is not None
                except Exception:
                    listening = False
            else:
                await asyncio.sleep(0.25)
            if not hinted and time.monotonic() < next_poll:
                continue
            next_poll = time.monotonic() + POLL_S
            try:
                state = await svc.guarded(lambda: _state(store))
            except StoreError as exc:
                yield _event("unavailable", {"message": str(exc)})
                continue
            for kind, value in state.items():
                if last.get(kind) != value:
                    last[kind] = value
                    yield _event(kind, value)
    finally:
        console.streams -= 1
        try:
            await asyncio.wait_for(pubsub.aclose(), timeout=2)  # type: ignore[no-untyped-call]
        except Exception:
            pass
