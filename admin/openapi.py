"""The OpenAPI 3.1 document of the admin service, generated from the contract's structs
(`configbus.api`): one row per route names its bodies, query, headers and answers; every
schema comes from msgspec, the config document's included. tests/admin/test_openapi.py runs
schemathesis against it and checks it against what the routes answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import msgspec

from admin.auth import Permission
from configbus.api import (
    SCHEMA_REF,
    AuditPage,
    AuditQuery,
    Diff,
    DiffQuery,
    ErrorEnvelope,
    ETag,
    IdempotencyKey,
    IfMatch,
    ImportResult,
    KeyCreateRequest,
    KeyETag,
    KeyId,
    KeyIfMatch,
    KeyIssued,
    KeyPage,
    KeyRevoked,
    KeyRotateRequest,
    KeysQuery,
    KeyUpdateRequest,
    MergePatch,
    Namespace,
    PatchQuery,
    ProviderModels,
    ProviderName,
    ProviderTest,
    PublishRequest,
    Replicas,
    RetryAfter,
    RollbackRequest,
    RolloutAction,
    RolloutRequest,
    RolloutView,
    RotateRequest,
    Status,
    UsageQuery,
    UsageReport,
    ValidateQuery,
    ValidateResult,
    Version,
    VersionPage,
    VersionsQuery,
    VersionView,
    non_null,
)
from configbus.clientkeys import ClientKey
from configbus.document import Document
from configbus.store import Export, PublishResult

JSON = "application/json"
Answer = tuple[str, Any]  # description, body type


class Op(NamedTuple):
    """One route of the contract."""

    summary: str
    permission: Permission | None  # None: public, no token
    ok: Mapping[int, Answer]
    body: Any = None
    query: type[msgspec.Struct] | None = None
    writes: bool = False  # takes If-Match and Idempotency-Key
    errors: tuple[int, ...] = ()
    body_required: bool = True
    body_media: tuple[str, ...] = (JSON,)
    media: str = JSON
    headers: tuple[tuple[str, Any], ...] = ()  # request headers besides `writes`' ones


NS = "/v1/namespaces/{ns}"
PATH_PARAMS: dict[str, Any] = {
    "ns": Namespace,
    "n": Version,
    "name": ProviderName,
    "id": KeyId,
}
PUBLISHED: dict[int, Answer] = {
    201: ("a new version", PublishResult),
    200: ("no-op (same body as head) or an idempotent replay", PublishResult),
}
WRITE_ERRORS = (400, 409, 413, 422, 429)
KEY_IF_MATCH = (("If-Match", KeyIfMatch),)

OPERATIONS: dict[tuple[str, str], Op] = {
    ("get", f"{NS}/config"): Op(
        "the current document, secrets masked", "read", {200: ("head", VersionView)}
    ),
    ("put", f"{NS}/config"): Op(
        "publish a full document",
        "publish",
        PUBLISHED,
        PublishRequest,
        writes=True,
        errors=WRITE_ERRORS,
    ),
    ("patch", f"{NS}/config"): Op(
        "publish a JSON merge patch (RFC 7396) of the current document; a patch object "
        "naming a secret form replaces that secret whole",
        "publish",
        PUBLISHED,
        MergePatch,
        PatchQuery,
        writes=True,
        errors=WRITE_ERRORS,
        body_media=("application/merge-patch+json", JSON),
    ),
    ("post", f"{NS}/validate"): Op(
        "check a document without publishing it; with `probe=true`, also ask every provider "
        "it changes (against head) for its model list with its key",
        "validate",
        {200: ("valid", ValidateResult)},
        PublishRequest,
        ValidateQuery,
        errors=(400, 413, 422),
    ),
    ("get", f"{NS}/versions"): Op(
        "version history, newest first",
        "read",
        {200: ("a page of versions", VersionPage)},
        query=VersionsQuery,
        errors=(400,),
    ),
    ("get", f"{NS}/versions/{{n}}"): Op(
        "one version, secrets masked", "read", {200: ("the version", VersionView)}, errors=(400,)
    ),
    ("get", f"{NS}/diff"): Op(
        "difference between two versions (masked documents)",
        "read",
        {200: ("the diff", Diff)},
        query=DiffQuery,
        errors=(400,),
    ),
    ("post", f"{NS}/rollback"): Op(
        "publish an old version's body as a new version",
        "rollback",
        PUBLISHED,
        RollbackRequest,
        writes=True,
        errors=WRITE_ERRORS,
    ),
    ("post", f"{NS}/rollouts"): Op(
        "start a rollout: a new version (document or merge patch) for stages of replicas "
        "first, judged by the guard; head moves only when the last stage passes",
        "publish",
        PUBLISHED,
        RolloutRequest,
        writes=True,
        errors=(*WRITE_ERRORS, 404),
    ),
    ("get", f"{NS}/rollout"): Op(
        "the rollout (running, or the last one ended) with the guard's view of its stage",
        "read",
        {200: ("the rollout", RolloutView)},
        errors=(404,),
    ),
    ("post", f"{NS}/rollout/promote"): Op(
        "promote the running rollout now: its version becomes head",
        "steer",
        {200: ("the promoted rollout", RolloutView)},
        RolloutAction,
        errors=(400, 404, 409, 413, 429),
        body_required=False,
    ),
    ("post", f"{NS}/rollout/abort"): Op(
        "abort the running rollout: its replicas go back to head",
        "steer",
        {200: ("the aborted rollout", RolloutView)},
        RolloutAction,
        errors=(400, 404, 409, 413, 429),
        body_required=False,
    ),
    ("get", f"{NS}/replicas"): Op(
        "rollout status of every replica", "read", {200: ("replicas and a summary", Replicas)}
    ),
    ("get", f"{NS}/providers/{{name}}/models"): Op(
        "the models a provider of head lists, asked with its stored key",
        "validate",
        {200: ("the provider's models", ProviderModels)},
        errors=(502,),
    ),
    ("post", f"{NS}/providers/{{name}}/test"): Op(
        "ask a provider of head for its model list with its stored key: latency, status, "
        "and the provider's error if any (the key blotted out)",
        "validate",
        {200: ("the test's outcome (`ok` false when the provider failed)", ProviderTest)},
    ),
    ("post", f"{NS}/keys"): Op(
        "create a client key: generated and answered this once (only its hash is kept), or "
        "from the `key_sha256` you bring; a hash a client of head's document or another key "
        "has is refused",
        "publish",
        {201: ("the key (once) and its entry", KeyIssued)},
        KeyCreateRequest,
        errors=WRITE_ERRORS,
    ),
    ("get", f"{NS}/keys"): Op(
        "a page of client keys (never the keys themselves), filtered by team or tag",
        "read",
        {200: ("a page of keys", KeyPage)},
        query=KeysQuery,
        errors=(400,),
    ),
    ("get", f"{NS}/keys/{{id}}"): Op(
        "one client key's entry (never the key itself)",
        "read",
        {200: ("the entry", ClientKey)},
        errors=(400,),
    ),
    ("patch", f"{NS}/keys/{{id}}"): Op(
        "change a client key's fields (absent: kept, null: cleared); with If-Match, only if "
        "the key's revision is that",
        "publish",
        {200: ("the entry changed", ClientKey)},
        KeyUpdateRequest,
        errors=WRITE_ERRORS,
        headers=KEY_IF_MATCH,
    ),
    ("delete", f"{NS}/keys/{{id}}"): Op(
        "revoke a client key: it answers 401 on every replica",
        "publish",
        {200: ("revoked", KeyRevoked)},
        errors=(400, 409, 429),
        headers=KEY_IF_MATCH,
    ),
    ("post", f"{NS}/keys/{{id}}/rotate"): Op(
        "a new key for the entry, answered this once; the old key keeps working for "
        "`grace_s` seconds",
        "publish",
        {200: ("the new key (once) and the entry", KeyIssued)},
        KeyRotateRequest,
        errors=WRITE_ERRORS,
        body_required=False,
        headers=KEY_IF_MATCH,
    ),
    ("get", f"{NS}/audit"): Op(
        "audit entries, newest first",
        "read",
        {200: ("a page of entries", AuditPage)},
        query=AuditQuery,
        errors=(400,),
    ),
    ("get", f"{NS}/export"): Op(
        "every retained version (secrets stay encrypted)", "read", {200: ("the export", Export)}
    ),
    ("post", f"{NS}/import"): Op(
        "re-seed an empty namespace from an export",
        "import",
        {201: ("imported", ImportResult)},
        Export,
        errors=WRITE_ERRORS,
    ),
    ("post", f"{NS}/rotate-secrets"): Op(
        "re-encrypt every secret with the newest key, as a new version",
        "rotate",
        PUBLISHED,
        RotateRequest,
        errors=WRITE_ERRORS,
        body_required=False,
    ),
    ("get", f"{NS}/usage"): Op(
        "requests, tokens and cost per key, model, provider and team over a time range, "
        "as the replicas counted them from the upstreams' reported usage (flushed every "
        "second); filters, `group_by`, and `bucket` for usage over time (a row per minute, "
        "hour or day; 400 past the cap on buckets)",
        "read",
        {200: ("the sums, per group and in total", UsageReport)},
        query=UsageQuery,
        errors=(400,),
    ),
    ("get", "/health/live"): Op("the process is up", None, {200: ("up", Status)}),
    ("get", "/health/ready"): Op(
        "Redis is reachable",
        None,
        {200: ("ready", Status), 503: ("Redis unavailable", ErrorEnvelope)},
    ),
    ("get", "/metrics"): Op(
        "Prometheus metrics", None, {200: ("metrics", str)}, media="text/plain"
    ),
    ("get", "/openapi.json"): Op(
        "this document", None, {200: ("the OpenAPI document", dict[str, Any])}
    ),
}

ERRORS = {
    400: "bad header or query parameter, or body not JSON",
    401: "missing or unknown token",
    403: "the token's role lacks this permission",
    404: "invalid namespace, or nothing (such) published (or no such provider or key)",
    409: "version conflict (`current_version` says what is current), a key's revision "
    "conflict (`current_revision`), or a key hash that is taken",
    413: "request body too large",
    422: "invalid document or request body (every issue with its path)",
    429: "publish rate limit of this token reached",
    502: "the provider did not answer as asked (its answer, key blotted out)",
    503: "Redis unavailable (circuit breaker)",
}
# Response headers follow from the answer: a body naming a version carries its ETag.
HEADERS: dict[Any, dict[str, Any]] = {
    PublishResult: {"ETag": ETag, "Location": str},
    VersionView: {"ETag": ETag},
    ClientKey: {"ETag": KeyETag},
    KeyIssued: {"ETag": KeyETag, "Location": str},
    401: {"WWW-Authenticate": Literal["Bearer"]},
    429: {"Retry-After": RetryAfter},
    503: {"Retry-After": RetryAfter},
}
WRITE_HEADERS: dict[str, Any] = {"If-Match": IfMatch, "Idempotency-Key": IdempotencyKey}


def _types() -> list[Any]:
    """Every type the document shows a schema of, each once."""
    seen: list[Any] = [ErrorEnvelope, Document, *PATH_PARAMS.values(), *WRITE_HEADERS.values()]
    for op in OPERATIONS.values():
        seen += [t for _, t in op.headers]
        seen += [t for _, t in op.ok.values()] + [op.body] * (op.body is not None)
        seen += [non_null(f.type) for f in msgspec.structs.fields(op.query or msgspec.Struct)]
    seen += [t for headers in HEADERS.values() for t in headers.values()]
    return list(dict.fromkeys(seen))


def spec() -> dict[str, Any]:
    """The OpenAPI document, built from `OPERATIONS` and the contract's structs."""
    types = _types()
    found, components = msgspec.json.schema_components(types, ref_template=SCHEMA_REF)
    schema = dict(zip(types, found, strict=True))

    def answer(description: str, tp: Any, key: Any, media: str = JSON) -> dict[str, Any]:
        out: dict[str, Any] = {"description": description}
        out["content"] = {media: {"schema": schema[tp]}}
        headers = {**HEADERS.get(tp, {}), **HEADERS.get(key, {})}
        if headers:
            out["headers"] = {
                h: {"required": True, "schema": schema[t]} for h, t in headers.items()
            }
        return out

    def param(name: str, where: str, tp: Any, required: bool, default: Any = None) -> Any:
        s = dict(schema[tp])
        if default not in (None, msgspec.NODEFAULT):
            s["default"] = default
        out = {"name": name, "in": where, "required": required, "schema": s}
        if "description" in s:
            out["description"] = s["description"]
        if "examples" in s:  # schemathesis calls explicit examples first: real versions
            out["example"] = s["examples"][0]
        return out

    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in OPERATIONS.items():
        params = [param(p, "path", PATH_PARAMS[p], True) for p in re.findall(r"{(\w+)}", path)]
        if op.writes:
            params += [param(h, "header", t, False) for h, t in WRITE_HEADERS.items()]
        params += [param(h, "header", t, False) for h, t in op.headers]
        for f in msgspec.structs.fields(op.query or msgspec.Struct):
            params.append(param(f.encode_name, "query", non_null(f.type), f.required, f.default))
        responses = {str(s): answer(d, t, s, op.media) for s, (d, t) in op.ok.items()}
        if op.permission is not None:
            for status in sorted({401, 403, 404, 503, *op.errors}):
                responses[str(status)] = answer(ERRORS[status], ErrorEnvelope, status)
        operation: dict[str, Any] = {"summary": op.summary, "responses": responses}
        if op.permission is None:
            operation["security"] = []
        else:
            operation["description"] = f"Needs the `{op.permission}` permission."
            operation["security"] = [{"bearer": []}]
        if params:
            operation["parameters"] = params
        if op.body is not None:
            operation["requestBody"] = {
                "required": op.body_required,
                "content": {m: {"schema": schema[op.body]} for m in op.body_media},
            }
        paths.setdefault(path, {})[method] = operation
    document = {
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
            "schemas": components,
        },
        "security": [{"bearer": []}],
    }
    # Plain JSON values, as served (msgspec gives a tuple default as a tuple).
    return msgspec.json.decode(msgspec.json.encode(document))  # type: ignore[no-any-return]
