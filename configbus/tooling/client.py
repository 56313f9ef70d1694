"""A client for the admin service's HTTP API, used by the `configbus` CLI and by tests.

    client = AdminClient("http://127.0.0.1:8700", token="...", namespace="default")
    result = client.publish(document, message="raise timeouts", if_match=7)
    print(result.version)

Answers are decoded into the contract's structs (`configbus.api`), the same the service
encodes them from. Every error answer becomes an `AdminApiError` carrying the status, the
service's error code, its message and each issue with its path; a service that cannot be
reached is an `AdminUnreachable` (both in `configbus.errors`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec
from msgspec import UnsetType

from configbus.api import (
    AuditPage,
    AuditQuery,
    Diff,
    DiffQuery,
    ErrorEnvelope,
    ImportResult,
    KeyCreateRequest,
    KeyIssued,
    KeyPage,
    KeyRevoked,
    KeyRotateRequest,
    KeysQuery,
    KeyUpdateRequest,
    PatchQuery,
    ProviderModels,
    ProviderTest,
    PublishRequest,
    Replicas,
    RollbackRequest,
    RolloutAction,
    RolloutRequest,
    RolloutView,
    RotateRequest,
    StageRequest,
    UsageBucket,
    UsageQuery,
    UsageReport,
    ValidateQuery,
    ValidateResult,
    VersionPage,
    VersionsQuery,
    VersionView,
)
from configbus.clientkeys import ClientKey
from configbus.errors import AdminApiError, AdminUnreachable
from configbus.names import DEFAULT_NAMESPACE
from configbus.rollout import Guard
from configbus.store import Export, PublishResult

DEFAULT_TIMEOUT_S = 10.0
T = TypeVar("T")
_encoder = msgspec.json.Encoder()


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decode(type_: type[T], data: bytes) -> T:
    """`data` as `type_`, with one decoder per type, built on first use."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    result: T = decoder.decode(data)
    return result


class AdminClient:
    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        namespace: str = DEFAULT_NAMESPACE,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.namespace = namespace
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout_s, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: msgspec.Struct | None = None,
    ) -> httpx.Response:
        """Send one request; an error answer raises AdminApiError."""
        query = {k: v for k, v in msgspec.to_builtins(params or {}).items() if v is not None}
        try:
            resp = self._http.request(method, path, content=content, headers=headers, params=query)
        except httpx.HTTPError as exc:
            raise AdminUnreachable(f"admin service at {self.url}: {exc}") from None
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

    def _call(
        self,
        answer: type[T],
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        params: msgspec.Struct | None = None,
    ) -> T:
        content = None if body is None else _encoder.encode(body)
        if content is not None:
            headers = {"Content-Type": "application/json", **(headers or {})}
        resp = self.request(
            method,
            f"/v1/namespaces/{self.namespace}/{path}",
            content=content,
            headers=headers,
            params=params,
        )
        try:
            return _decode(answer, resp.content)
        except msgspec.DecodeError as exc:
            raise AdminApiError(
                resp.status_code, "bad_answer", f"unexpected answer from {self.url}: {exc}"
            ) from None

    @staticmethod
    def _write_headers(if_match: int | None, idempotency_key: str | None) -> dict[str, str]:
        h = {}
        if if_match is not None:
            h["If-Match"] = f'"{if_match}"'
        if idempotency_key:
            h["Idempotency-Key"] = idempotency_key
        return h

    def get(self) -> VersionView:
        return self._call(VersionView, "GET", "config")

    def publish(
        self,
        document: Any,
        *,
        message: str = "",
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        return self._call(
            PublishResult,
            "PUT",
            "config",
            PublishRequest(document=document, message=message),
            headers=self._write_headers(if_match, idempotency_key),
        )

    def patch(
        self,
        patch: Any,
        *,
        message: str = "",
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        return self._call(
            PublishResult,
            "PATCH",
            "config",
            patch,
            headers={
                "Content-Type": "application/merge-patch+json",
                **self._write_headers(if_match, idempotency_key),
            },
            params=PatchQuery(message=message),
        )

    def validate(self, document: Any, *, probe: bool = False) -> ValidateResult:
        """Check `document`; with `probe`, also ask each provider it changes for its model
        list (a failure is an AdminApiError `probe_failed` with an issue per provider)."""
        return self._call(
            ValidateResult,
            "POST",
            "validate",
            PublishRequest(document=document),
            params=ValidateQuery(probe=True) if probe else None,
        )

    def provider_models(self, name: str) -> ProviderModels:
        """The models provider `name` of head lists, asked with its stored key."""
        return self._call(ProviderModels, "GET", f"providers/{_segment(name)}/models")

    def test_provider(self, name: str) -> ProviderTest:
        """Ask provider `name` of head whether it answers (`ok` false when it failed)."""
        return self._call(ProviderTest, "POST", f"providers/{_segment(name)}/test")

    def versions(self, *, limit: int = 50, before: int | None = None) -> VersionPage:
        return self._call(
            VersionPage, "GET", "versions", params=VersionsQuery(limit=limit, before=before)
        )

    def version(self, n: int) -> VersionView:
        return self._call(VersionView, "GET", f"versions/{n}")

    def diff(self, a: int, b: int) -> Diff:
        return self._call(Diff, "GET", "diff", params=DiffQuery(from_=a, to=b))

    def rollback(
        self,
        to_version: int,
        *,
        message: str = "",
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        return self._call(
            PublishResult,
            "POST",
            "rollback",
            RollbackRequest(to_version=to_version, message=message),
            headers=self._write_headers(if_match, idempotency_key),
        )

    def start_rollout(
        self,
        *,
        stages: list[StageRequest],
        document: Any = None,
        patch: Any = None,
        guard: Guard | None = None,
        preflight: bool = False,
        message: str = "",
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> PublishResult:
        """A new version for `stages` of replicas first (a full document or a merge patch of
        head); `rollout()` then shows it."""
        return self._call(
            PublishResult,
            "POST",
            "rollouts",
            RolloutRequest(
                document=document,
                patch=patch,
                message=message,
                stages=stages,
                guard=guard or Guard(),
                preflight=preflight,
            ),
            headers=self._write_headers(if_match, idempotency_key),
        )

    def rollout(self) -> RolloutView:
        """The running rollout, or the last one ended, with the guard's view while it runs."""
        return self._call(RolloutView, "GET", "rollout")

    def promote_rollout(self, *, message: str = "") -> RolloutView:
        return self._call(RolloutView, "POST", "rollout/promote", RolloutAction(message=message))

    def abort_rollout(self, *, message: str = "") -> RolloutView:
        return self._call(RolloutView, "POST", "rollout/abort", RolloutAction(message=message))

    def replicas(self) -> Replicas:
        return self._call(Replicas, "GET", "replicas")

    def audit(
        self,
        *,
        count: int = 100,
        before: str | None = None,
        actor: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
    ) -> AuditPage:
        q = AuditQuery(count=count, before=before, actor=actor, action=action, outcome=outcome)
        return self._call(AuditPage, "GET", "audit", params=q)

    def usage(
        self,
        *,
        start: int | None = None,
        end: int | None = None,
        key: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        team: str | None = None,
        group_by: list[str] | None = None,
        bucket: UsageBucket | None = None,
    ) -> UsageReport:
        """Usage over [start, end) (unix seconds; default: the last day), filtered, grouped,
        and per UTC minute, hour or day with `bucket`."""
        q = UsageQuery(
            from_=start,
            to=end,
            key=key,
            model=model,
            provider=provider,
            team=team,
            group_by=",".join(group_by) if group_by else None,
            bucket=bucket,
        )
        return self._call(UsageReport, "GET", "usage", params=q)

    def export(self) -> Export:
        return self._call(Export, "GET", "export")

    def import_(self, export: Export | Mapping[str, Any]) -> ImportResult:
        """Re-seed an empty namespace; `export` as `export()` gave it, or as read from a file
        (the service checks it)."""
        return self._call(ImportResult, "POST", "import", export)

    def rotate_secrets(self, *, message: str = "") -> PublishResult:
        return self._call(PublishResult, "POST", "rotate-secrets", RotateRequest(message=message))

    # -- client keys -----------------------------------------------------------------------

    def create_key(self, request: KeyCreateRequest) -> KeyIssued:
        """A new client key; `key` in the answer is the key itself, shown this once (None
        when the request brought its hash)."""
        return self._call(KeyIssued, "POST", "keys", request)

    def keys(
        self,
        *,
        cursor: str | None = None,
        count: int = 100,
        team: str | None = None,
        tag: str | None = None,
    ) -> KeyPage:
        q = KeysQuery(cursor=cursor, count=count, team=team, tag=tag)
        return self._call(KeyPage, "GET", "keys", params=q)

    def key(self, key_id: str) -> ClientKey:
        return self._call(ClientKey, "GET", f"keys/{_segment(key_id)}")

    def update_key(
        self, key_id: str, request: KeyUpdateRequest, *, if_match: int | None = None
    ) -> ClientKey:
        return self._call(
            ClientKey,
            "PATCH",
            f"keys/{_segment(key_id)}",
            request,
            headers=self._write_headers(if_match, None),
        )

    def rotate_key(
        self, key_id: str, *, grace_s: float = 0.0, if_match: int | None = None
    ) -> KeyIssued:
        """A new key for the entry (shown this once); the old one works `grace_s` more."""
        return self._call(
            KeyIssued,
            "POST",
            f"keys/{_segment(key_id)}/rotate",
            KeyRotateRequest(grace_s=grace_s),
            headers=self._write_headers(if_match, None),
        )

    def revoke_key(self, key_id: str, *, if_match: int | None = None) -> KeyRevoked:
        return self._call(
            KeyRevoked,
            "DELETE",
            f"keys/{_segment(key_id)}",
            headers=self._write_headers(if_match, None),
        )


def _segment(text: str) -> str:
    return quote(text, safe="")


def _error(resp: httpx.Response) -> AdminApiError:
    retry_after = resp.headers.get("retry-after")
    try:
        err = _decode(ErrorEnvelope, resp.content).error
    except msgspec.DecodeError:  # not the service's envelope: a proxy in between, say
        return AdminApiError(
            resp.status_code,
            "http_error",
            resp.text[:200] or resp.reason_phrase,
            retry_after=retry_after,
        )
    current = None if isinstance(err.current_version, UnsetType) else err.current_version
    return AdminApiError(
        resp.status_code,
        err.code,
        err.message,
        issues=err.issues,
        current_version=current,
        retry_after=retry_after,
    )
