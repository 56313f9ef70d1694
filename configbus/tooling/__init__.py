"""Tooling around the bus, kept apart from the library.

The local fleet of `configbus up`, the mock upstream, the embedded and local Redis
runners, the process harness, the reference generator and the admin HTTP client. The
library (`configbus`) never imports this package; only the CLI layer and tests do.
"""
