"""Test doubles configbus ships for its users: a sample document and an in-memory store.

The in-memory store is a real `Store` over fakeredis (with Lua), good for fast unit tests
of code that publishes or reads documents. For pub/sub timing, connection loss and restarts,
test against a real redis-server.
"""

from __future__ import annotations

import hashlib
from typing import Any

from configbus.document import Document
from configbus.store import Store
from configbus.validation import to_document

SAMPLE_CLIENT_KEY = "sk-client-team-a"


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def sample_data(
    *,
    upstream_a: str = "http://127.0.0.1:9001/v1",
    upstream_b: str = "http://127.0.0.1:9002/v1",
    api_key: str = "sk-upstream-secret-a",
) -> dict[str, Any]:
    """A small, valid document as plain data: two providers, two models, one client."""
    return {
        "providers": [
            {
                "name": "upstream-a",
                "type": "openai",
                "base_url": upstream_a,
                "api_key": {"secret": api_key},
                "timeout_s": 10,
                "max_retries": 1,
                "circuit_breaker": {"failure_threshold": 3, "recovery_timeout_s": 1},
            },
            {
                "name": "upstream-b",
                "type": "openai",
                "base_url": upstream_b,
                "api_key_env": "UPSTREAM_B_KEY",
                "timeout_s": 10,
                "max_retries": 1,
            },
        ],
        "models": [
            {
                "name": "m",
                "deployments": [{"provider": "upstream-a", "model": "mock-a"}],
                "fallbacks": ["m-backup"],
                "params": {"temperature": 0.2},
            },
            {"name": "m-backup", "deployments": [{"provider": "upstream-b", "model": "mock-b"}]},
        ],
        "clients": [
            {
                "name": "team-a",
                "key_sha256": key_sha256(SAMPLE_CLIENT_KEY),
                "models": ["*"],
                "rate_limit": {"rpm": 600},
            },
        ],
        "logging": {"level": "INFO"},
        "metadata": {"owner": "platform"},
    }


def sample_document(**kwargs: Any) -> Document:
    return to_document(sample_data(**kwargs))


def memory_store(namespace: str = "test", **kwargs: Any) -> Store:
    """A Store over an in-process fakeredis server with Lua scripting."""
    import fakeredis

    return Store(fakeredis.FakeAsyncRedis(), namespace, **kwargs)
