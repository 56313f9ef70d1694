"""The configbus proxy replica: an OpenAI-compatible LLM proxy that follows the config bus.

Build the app with `proxy.app.create_app(settings)`; run it with `configbus proxy`.

    POST /v1/chat/completions   stream and non-stream; OpenAI error bodies
    GET  /v1/models             the models the caller's key may use
    GET  /health/live           the process answers
    GET  /health/ready          503 until a config version is applied
    GET  /status                replica id, namespace, version, epoch, stale, breakers
    GET  /metrics               Prometheus (the watcher's metrics and the proxy's)

Answers carry `x-configbus-version` (the version that served the request),
`x-configbus-provider` (the provider that answered) and, for rate-limited keys,
`x-ratelimit-limit`, `x-ratelimit-remaining` and, on 429, `retry-after`.

Modules, one idea each: `app` (create_app, lifespan, small endpoints), `chat` (the hot
endpoint), `runtime` (the snapshot built per version), `routing`, `limits`, `upstream` (a
provider's pool and circuit breaker), `anthropic` (Messages API translation), `errors`,
`metrics`, `settings`.
"""
