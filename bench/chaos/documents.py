"""The documents the soak publishes, and the bad bodies it injects."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from configbus.codec import canonical
from configbus.testing import sample_data
from configbus.validation import to_document


def document(n: int, mock_a: str, mock_b: str) -> dict[str, Any]:
    """Version n of the soak's document: valid, distinct from every other n."""
    data = sample_data(upstream_a=mock_a + "/v1", upstream_b=mock_b + "/v1")
    # Every kind of limit, far above the load: each request goes through all of them (fleet
    # leases, token estimates and corrections), Redis faults send them local, none refuses.
    huge = {"rpm": 10_000_000, "tpm": 10_000_000_000}
    data["clients"][0]["rate_limit"] = huge
    data["rate_limits"] = {"global": huge, "model_default": huge, "provider_default": huge}
    data["ip_rules"] = {"allow": ["127.0.0.0/8", "10.0.0.0/8", "::1/128"], "rate_limit": huge}
    data["models"][0]["params"] = {"temperature": (n % 10) / 10}
    data["metadata"] = {"owner": "chaos", "change": str(n)}
    return data


def broken_document(n: int, mock_a: str, mock_b: str, dead_port: int) -> dict[str, Any]:
    """Version n, valid but wrong: the primary provider on a port nothing listens on, and no
    fallback to hide it. What a rollout's guard must stop at the canary."""
    data = document(n, mock_a, mock_b)
    data["providers"][0]["base_url"] = f"http://127.0.0.1:{dead_port}/v1"
    data["models"][0].pop("fallbacks", None)
    return data


def invalid_body(mock_a: str, mock_b: str) -> bytes:
    """A document that decodes as JSON but fails validation: a model on an unknown provider."""
    data = document(0, mock_a, mock_b)
    data["models"][0]["deployments"] = [{"provider": "no-such-provider", "model": "x"}]
    data["providers"][0]["api_key"] = {"secret": "plaintext-never-stored"}
    return msgspec.json.encode(data)


def canonical_body(data: dict[str, Any]) -> bytes:
    """A valid document body as the admin would store it, minus encryption (the secret
    becomes an env reference, so no key is needed)."""
    data = json.loads(json.dumps(data))
    data["providers"][0].pop("api_key")
    data["providers"][0]["api_key_env"] = "UPSTREAM_B_KEY"
    return canonical(to_document(data))
