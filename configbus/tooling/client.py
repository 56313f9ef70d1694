"""A client for the admin service's HTTP API, used by the `configbus` CLI and by tests.

    client = AdminClient("http://127.0.0.1:8700", token="...", namespace="default")
    result = client.publish(document, message="raise timeouts", if_match=7)

Every error answer becomes an `AdminApiError` carrying the status, the service's error code,
its message and each issue with its path; a service that cannot be reached is an
`AdminUnreachable`.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from configbus.errors import ConfigBusError, Issue
from configbus.names import DEFAULT_NAMESPACE

DEFAULT_TIMEOUT_S = 10.0


class AdminApiError(ConfigBusError):
    """The admin service answered with an error."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        issues: list[Issue] | None = None,
        current_version: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        self.status, self.code, self.message = status, code, message
        self.issues = issues or []
        self.current_version = current_version
        self.retry_after = retry_after
        text = f"{message} (HTTP {status} {code})"
        if self.issues:
            text += "".join(f"\n  {i}" for i in self.issues)
        if retry_after:
            text += f"\n  retry after {retry_after}s"
        super().__init__(text)


class AdminUnreachable(ConfigBusError):
    """The admin service could not be reached."""


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

    def _ns(self, path: str) -> str:
        return f"/v1/namespaces/{self.namespace}/{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        try:
            resp = self._http.request(
                method,
                path,
                json=json_body,
                content=content,
                headers=headers,
                params={k: v for k, v in (params or {}).items() if v is not None},
            )
        except httpx.HTTPError as exc:
            raise AdminUnreachable(f"admin service at {self.url}: {exc}") from None
        if resp.status_code >= 400:
            raise _error(resp)
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = self.request(method, self._ns(path), **kwargs).json()
        return data

    @staticmethod
    def _write_headers(if_match: int | None, idempotency_key: str | None) -> dict[str, str]:
        h = {}
        if if_match is not None:
            h["If-Match"] = f'"{if_match}"'
        if idempotency_key:
            h["Idempotency-Key"] = idempotency_key
        return h

    def get(self) -> dict[str, Any]:
        return self._json("GET", "config")

    def publish(
        self,
        document: Any,
        *,
        message: str = "",
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return self._json(
            "PUT",
            "config",
            json_body={"document": document, "message": message},
            headers=self._write_headers(if_match, idempotency_key),
        )

    def patch(
        self,
        patch: Any,
        *,
        message: str = "",
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/merge-patch+json",
            **self._write_headers(if_match, idempotency_key),
        }
        return self._json(
            "PATCH",
            "config",
            content=json.dumps(patch).encode(),
            headers=headers,
            params={"message": message or None},
        )

    def validate(self, document: Any) -> dict[str, Any]:
        return self._json("POST", "validate", json_body={"document": document})

    def versions(self, *, limit: int = 50, before: int | None = None) -> dict[str, Any]:
        return self._json("GET", "versions", params={"limit": limit, "before": before})

    def version(self, n: int) -> dict[str, Any]:
        return self._json("GET", f"versions/{n}")

    def diff(self, a: int, b: int) -> dict[str, Any]:
        return self._json("GET", "diff", params={"from": a, "to": b})

    def rollback(
        self,
        to_version: int,
        *,
        message: str = "",
        if_match: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        return self._json(
            "POST",
            "rollback",
            json_body={"to_version": to_version, "message": message},
            headers=self._write_headers(if_match, idempotency_key),
        )

    def replicas(self) -> dict[str, Any]:
        return self._json("GET", "replicas")

    def audit(self, *, count: int = 100, before: str | None = None) -> dict[str, Any]:
        return self._json("GET", "audit", params={"count": count, "before": before})

    def export(self) -> dict[str, Any]:
        return self._json("GET", "export")

    def import_(self, export: Any) -> dict[str, Any]:
        return self._json("POST", "import", json_body=export)

    def rotate_secrets(self, *, message: str = "") -> dict[str, Any]:
        return self._json("POST", "rotate-secrets", json_body={"message": message})


def _error(resp: httpx.Response) -> AdminApiError:
    try:
        err = resp.json()["error"]
        issues = [Issue(i.get("path", ""), i.get("message", "")) for i in err.get("issues", [])]
        return AdminApiError(
            resp.status_code,
            str(err.get("code", "error")),
            str(err.get("message", "")),
            issues=issues,
            current_version=err.get("current_version"),
            retry_after=resp.headers.get("retry-after"),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return AdminApiError(
            resp.status_code,
            "http_error",
            resp.text[:200] or resp.reason_phrase,
            retry_after=resp.headers.get("retry-after"),
        )
