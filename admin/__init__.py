"""The admin service: publish, inspect and roll back a namespace's config over HTTP.

Built by `admin.app.create_app(settings)`; run by `configbus admin`. The contract is
`GET /openapi.json` (admin/openapi.py); in short, under `/v1/namespaces/{ns}/`:

    GET config            head, secrets masked; ETag "<version>"        read
    PUT config            {"document", "message"}; If-Match, Idempotency-Key → 201/200   publish
    PATCH config          JSON merge patch of the (masked) head; ?message=                publish
    POST validate         dry run                                                         validate
    GET versions[/n], diff?from=&to=, replicas, audit, export                             read
    POST rollback         {"to_version", "message"}                                       rollback
    POST import           re-seed an empty namespace from an export                       import
    POST rotate-secrets   re-encrypt with the newest key, as a new version                rotate

Roles: viewer = read; publisher = read, validate, publish; sre = read, rollback; admin = all.
Errors are `{"error": {"code", "message", "issues": [{"path", "message"}]}}`: 400 bad header
or query, 401 no/unknown token, 403 role, 404, 409 stale If-Match (with `current_version`),
413 body too large, 422 invalid document, 429 publish rate limit (Retry-After), 503 Redis
down (circuit breaker, Retry-After). Each request to a namespace writes one audit entry with
the token's name (publishes are audited by the store's publish script itself).
"""
