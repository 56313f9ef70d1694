"""The configbus proxy replica: an OpenAI-compatible LLM proxy that follows the config bus.

Build the app with `proxy.app.create_app(settings)`; run it with `configbus proxy`.
"""
