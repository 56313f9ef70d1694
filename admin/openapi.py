"""The OpenAPI 3.1 description of exactly what the admin service answers (hand-written;
tests/admin/test_openapi.py checks the service against it with schemathesis)."""

from __future__ import annotations

from typing import Any

from configbus.names import DEFAULT_NAMESPACE, NAMESPACE_PATTERN

MAX_VERSION = 2**53

_json = "application/json"


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(
    schema: dict[str, Any], *, required: bool = True, types: tuple[str, ...] = (_json,)
) -> dict[str, Any]:
    return {"required": required, "content": {t: {"schema": schema} for t in types}}


def _resp(
    description: str, schema: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = {_json: {"schema": schema}}
    if headers:
        out["headers"] = headers
    return out


def _header(
    description: str, *, required: bool = True, schema: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "description": description,
        "required": required,
        "schema": schema or {"type": "string"},
    }


_retry = {
    "Retry-After": _header("seconds to wait", schema={"type": "string", "pattern": r"^[0-9]+$"})
}
_etag = {
    "ETag": _header("the version, quoted", schema={"type": "string", "pattern": r'^"[0-9]+"$'})
}


def _err(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _resp(description, _ref("Error"), headers)


def _op(
    summary: str,
    permission: str,
    ok: dict[str, dict[str, Any]],
    *,
    body: dict[str, Any] | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[int, ...] = (),
) -> dict[str, Any]:
    responses: dict[str, Any] = dict(ok)
    responses["401"] = _err("missing or unknown token", {"WWW-Authenticate": _header("Bearer")})
    responses["403"] = _err("the token's role lacks this permission")
    responses["404"] = _err("invalid namespace, or nothing (such) published")
    responses["503"] = _err("Redis unavailable (circuit breaker)", _retry)
    messages = {
        400: "bad header or query parameter, or body not JSON",
        409: "version conflict (`current_version` says what is current)",
        413: "request body too large",
        422: "invalid document or request body (every issue with its path)",
        429: "publish rate limit of this token reached",
    }
    for code in errors:
        responses[str(code)] = _err(messages[code], _retry if code == 429 else None)
    op: dict[str, Any] = {
        "summary": summary,
        "description": f"Needs the `{permission}` permission.",
        "parameters": [{"$ref": "#/components/parameters/ns"}, *(params or [])],
        "responses": responses,
        "security": [{"bearer": []}],
    }
    if body is not None:
        op["requestBody"] = body
    return op


_if_match = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": "publish only if this is the current version",
    "schema": {"type": "string", "pattern": r'^"?[0-9]{1,15}"?$'},
}
_idem = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "a retry with the same key returns the first result",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "pattern": r"^[A-Za-z0-9._:-]+$",
    },
}


def _q(
    name: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


_published = {
    "201": _resp("a new version", _ref("PublishResult"), _etag),
    "200": _resp("no-op (same body as head) or an idempotent replay", _ref("PublishResult"), _etag),
}


def spec() -> dict[str, Any]:
    ns = "/v1/namespaces/{ns}"
    version_int = {"type": "integer", "minimum": 1, "maximum": MAX_VERSION}
    paths: dict[str, Any] = {
        f"{ns}/config": {
            "get": _op(
                "the current document, secrets masked",
                "read",
                {"200": _resp("head", _ref("Config"), _etag)},
            ),
            "put": _op(
                "publish a full document",
                "publish",
                _published,
                body=_body(_ref("PublishRequest")),
                params=[_if_match, _idem],
                errors=(400, 409, 413, 422, 429),
            ),
            "patch": _op(
                "publish a JSON merge patch (RFC 7396) of the current document; a "
                "patch object naming a secret form replaces that secret whole",
                "publish",
                _published,
                body=_body({"type": "object"}, types=("application/merge-patch+json", _json)),
                params=[
                    _if_match,
                    _idem,
                    _q("message", "the version's message", {"type": "string", "maxLength": 1000}),
                ],
                errors=(400, 409, 413, 422, 429),
            ),
        },
        f"{ns}/validate": {
            "post": _op(
                "check a document without publishing it",
                "validate",
                {"200": _resp("valid", _ref("ValidateResult"))},
                body=_body(_ref("PublishRequest")),
                errors=(400, 413, 422),
            ),
        },
        f"{ns}/versions": {
            "get": _op(
                "version history, newest first",
                "read",
                {"200": _resp("a page of versions", _ref("VersionPage"))},
                params=[
                    _q("limit", "page size", {"type": "integer", "minimum": 1, "maximum": 500}),
                    _q("before", "only versions older than this", version_int),
                ],
                errors=(400,),
            ),
        },
        f"{ns}/versions/{{n}}": {
            "get": _op(
                "one version, secrets masked",
                "read",
                {"200": _resp("the version", _ref("Config"), _etag)},
                params=[
                    {
                        "name": "n",
                        "in": "path",
                        "required": True,
                        "schema": version_int,
                        "example": 1,
                    }
                ],
                errors=(400,),
            ),
        },
        f"{ns}/diff": {
            "get": _op(
                "difference between two versions (masked documents)",
                "read",
                {"200": _resp("the diff", _ref("Diff"))},
                params=[
                    {**_q("from", "older version", version_int, True), "example": 1},
                    {**_q("to", "newer version", version_int, True), "example": 2},
                ],
                errors=(400,),
            ),
        },
        f"{ns}/rollback": {
            "post": _op(
                "publish an old version's body as a new version",
                "rollback",
                _published,
                body=_body(_ref("RollbackRequest")),
                params=[_if_match, _idem],
                errors=(400, 409, 413, 422, 429),
            ),
        },
        f"{ns}/replicas": {
            "get": _op(
                "rollout status of every replica",
                "read",
                {"200": _resp("replicas and a summary", _ref("Replicas"))},
            ),
        },
        f"{ns}/audit": {
            "get": _op(
                "audit entries, newest first",
                "read",
                {"200": _resp("a page of entries", _ref("AuditPage"))},
                params=[
                    _q("count", "page size", {"type": "integer", "minimum": 1, "maximum": 1000}),
                    _q(
                        "before",
                        "only entries older than this id",
                        {"type": "string", "pattern": r"^[0-9]{1,15}-[0-9]{1,6}$"},
                    ),
                ],
                errors=(400,),
            ),
        },
        f"{ns}/export": {
            "get": _op(
                "every retained version (secrets stay encrypted)",
                "read",
                {"200": _resp("the export", _ref("Export"))},
            ),
        },
        f"{ns}/import": {
            "post": _op(
                "re-seed an empty namespace from an export",
                "import",
                {"201": _resp("imported", _ref("ImportResult"))},
                body=_body(_ref("Export")),
                errors=(400, 409, 413, 422, 429),
            ),
        },
        f"{ns}/rotate-secrets": {
            "post": _op(
                "re-encrypt every secret with the newest key, as a new version",
                "rotate",
                _published,
                body=_body(_ref("RotateRequest"), required=False),
                errors=(400, 409, 413, 422, 429),
            ),
        },
        "/health/live": {
            "get": {
                "summary": "the process is up",
                "security": [],
                "responses": {"200": _resp("up", _ref("Status"))},
            }
        },
        "/health/ready": {
            "get": {
                "summary": "Redis is reachable",
                "security": [],
                "responses": {
                    "200": _resp("ready", _ref("Status")),
                    "503": _err("Redis unavailable", _retry),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "security": [],
                "responses": {
                    "200": {
                        "description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "this document",
                "security": [],
                "responses": {"200": _resp("the OpenAPI document", {"type": "object"})},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "configbus admin",
            "version": "1",
            "description": "Publish, inspect and roll back configuration documents. "
            "Every action, allowed or denied, is written to the namespace's audit "
            "stream with the token's name.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "parameters": {
                "ns": {
                    "name": "ns",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": NAMESPACE_PATTERN},
                    "example": DEFAULT_NAMESPACE,
                }
            },
            "schemas": _schemas(),
        },
        "security": [{"bearer": []}],
    }


def _obj(
    props: dict[str, Any], required: list[str] | None = None, additional: bool = False
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": additional,
    }


_str = {"type": "string"}
_int = {"type": "integer"}
_num = {"type": "number"}
_nullable_str = {"type": ["string", "null"]}
_nullable_int = {"type": ["integer", "null"]}


def _schemas() -> dict[str, Any]:
    meta = {
        "version": _int,
        "parent": _int,
        "epoch": _str,
        "sha256": _str,
        "author": _str,
        "message": _str,
        "created_at": _num,
        "kind": _str,
        "source": _nullable_int,
    }
    record = {**meta, "body": {"type": "string", "contentEncoding": "base64"}}
    return {
        "Issue": _obj({"path": _str, "message": _str}),
        "Error": _obj(
            {
                "error": _obj(
                    {
                        "code": _str,
                        "message": _str,
                        "issues": {"type": "array", "items": _ref("Issue")},
                        "current_version": _int,
                    },
                    required=["code", "message", "issues"],
                )
            }
        ),
        "Status": _obj({"status": _str}),
        "PublishRequest": _obj(
            {"document": {"type": "object"}, "message": {"type": "string", "maxLength": 1000}},
            required=["document"],
        ),
        "RollbackRequest": _obj(
            {
                "to_version": {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
                "message": {"type": "string", "maxLength": 1000},
            },
            required=["to_version"],
        ),
        "RotateRequest": _obj({"message": {"type": "string", "maxLength": 1000}}, required=[]),
        "PublishResult": _obj(
            {
                "version": _int,
                "epoch": _str,
                "sha256": _str,
                "outcome": {"enum": ["created", "noop", "idempotent"]},
            }
        ),
        "ValidateResult": _obj(
            {
                "valid": {"type": "boolean"},
                "issues": {"type": "array", "items": _ref("Issue")},
                "secrets": {"type": "array", "items": _str},
            }
        ),
        "RecordMeta": _obj(meta, required=[k for k in meta if k != "source"]),
        "Config": _obj(
            {"namespace": _str, **meta, "document": {"type": "object"}},
            required=["namespace", *[k for k in meta if k != "source"], "document"],
        ),
        "VersionPage": _obj(
            {
                "versions": {"type": "array", "items": _ref("RecordMeta")},
                "next_before": _nullable_int,
            }
        ),
        "Diff": _obj(
            {
                "from": _int,
                "to": _int,
                "unified": _str,
                "changes": {
                    "type": "array",
                    "items": _obj(
                        {"path": _str, "change": {"enum": ["added", "removed", "changed"]}}
                    ),
                },
            }
        ),
        "Replica": _obj(
            {
                "replica_id": _str,
                "state": {"enum": ["applied", "rejected", "pending"]},
                "version": _int,
                "epoch": _nullable_str,
                "sha256": _nullable_str,
                "applied_at": {"type": ["number", "null"]},
                "stale": {"type": "boolean"},
                "rejected_version": _nullable_int,
                "reason": _nullable_str,
                "last_seen": _num,
                "alive": {"type": "boolean"},
                "on_head": {"type": "boolean"},
            }
        ),
        "Replicas": _obj(
            {
                "summary": _obj(
                    {
                        "head": _int,
                        "epoch": _nullable_str,
                        "total": _int,
                        "alive": _int,
                        "dead": _int,
                        "rejected": _int,
                        "per_version": {"type": "object", "additionalProperties": _int},
                        "all_on_head": {"type": "boolean"},
                    }
                ),
                "replicas": {"type": "array", "items": _ref("Replica")},
            }
        ),
        "AuditEntry": _obj(
            {
                "id": _str,
                "ts": _num,
                "action": _str,
                "actor": _str,
                "outcome": _str,
                "fields": {"type": "object", "additionalProperties": _str},
            }
        ),
        "AuditPage": _obj(
            {
                "entries": {"type": "array", "items": _ref("AuditEntry")},
                "next_before": _nullable_str,
            }
        ),
        "VersionRecord": _obj(record, required=[k for k in record if k != "source"]),
        "Export": _obj(
            {
                "namespace": _str,
                "epoch": _nullable_str,
                "head": _int,
                "records": {"type": "array", "items": _ref("VersionRecord")},
            }
        ),
        "ImportResult": _obj({"head": _int, "versions": _int}),
    }
