"""The configbus proxy replica: an OpenAI-compatible LLM proxy that follows the config bus.

Build the app with `proxy.app.create_app(settings)`; run it with `configbus proxy`.

    POST /v1/chat/completions   stream and non-stream; OpenAI error bodies
    GET  /v1/models             the models the caller's key may use
    GET  /health/live           the process answers
    GET  /health/ready          503 until a config version is applied
    GET  /status                replica id, namespace, version, epoch, stale, breakers,
                                rate limits (fleet or local mode, refusals)
    GET  /metrics               Prometheus (the watcher's metrics and the proxy's)

Answers carry `x-configbus-version` (the version that served the request),
`x-configbus-provider` (the provider that answered) and, for rate-limited keys, OpenAI's
`x-ratelimit-{limit,remaining,reset}-{requests,tokens}`; a 429 adds `retry-after`, a shadow
limit's would-be refusal `x-configbus-shadow-limited`.

Modules, one idea each: `app` (create_app, lifespan, small endpoints), `chat` (the hot
endpoint), `runtime` (the snapshot built per version), `routing`, `upstream` (a provider's
pool and circuit breaker), `anthropic` (Messages API translation), `errors`, `metrics`,
`settings`; limits: `allowance` (one fleet bucket as a replica holds it), `limits` (the
replica's allowances and the task leasing for them), `admission` (a request against its
limits, and the answers), `iprules` (addresses: who is calling, allowed, limited how).
"""
