"""examples/providers.yaml: every documented upstream validates and routes (each provider's
host swapped for a mock upstream's, its URL path kept)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from configbus.codec import load_file, to_builtins
from configbus.testing import SAMPLE_CLIENT_KEY, key_sha256
from tests.proxy.solo import Solo, solo
from tests.support import RedisServer

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "providers.yaml"
KEYS = {
    "XAI_API_KEY": "xai-k",
    "GROQ_API_KEY": "groq-k",
    "OPENROUTER_API_KEY": "or-k",
    "TOGETHER_API_KEY": "tg-k",
    "AZURE_OPENAI_API_KEY": "az-k",
}
# model → (provider's URL path as documented + the endpoint, the key header sent)
ROUTES = {
    "grok": ("/v1/chat/completions", ("authorization", "Bearer xai-k")),
    "llama-fast": ("/openai/v1/chat/completions", ("authorization", "Bearer groq-k")),
    "llama-together": ("/v1/chat/completions", ("authorization", "Bearer tg-k")),
    "router-auto": ("/api/v1/chat/completions", ("authorization", "Bearer or-k")),
    "local-qwen": ("/v1/chat/completions", None),
    "gpt-4o": ("/openai/deployments/my-gpt4o-deployment/chat/completions", ("api-key", "az-k")),
}


@pytest.fixture(scope="module")
def env(redis_server: RedisServer) -> Iterator[Solo]:
    with solo(redis_server, "examples", **KEYS) as s:
        yield s


def on_mock(data: dict[str, Any], mock_url: str) -> dict[str, Any]:
    for p in data["providers"]:
        p["base_url"] = mock_url + urlsplit(p["base_url"]).path.rstrip("/")
    data["clients"][0]["key_sha256"] = key_sha256(SAMPLE_CLIENT_KEY)
    return data


def test_the_example_validates() -> None:
    doc = load_file(EXAMPLE)
    assert {p.name for p in doc.providers} == {
        "xai", "groq", "openrouter", "together", "vllm", "ollama", "azure"
    }  # fmt: skip


def test_each_documented_upstream_routes(env: Solo) -> None:
    doc = on_mock(to_builtins(load_file(EXAMPLE)), env.a.url)
    env.publish(doc)
    with httpx.Client(timeout=10) as http:
        for model, (path, key) in ROUTES.items():
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            r = env.post(http, "/v1/chat/completions", body)
            assert r.status_code == 200, (model, r.text)
            assert r.json()["choices"][0]["message"]["content"] == "served by A"
            seen = env.a.stats()
            assert seen["last_path"] == path, model
            if key is None:
                assert "authorization" not in seen["last_headers"], model
            else:
                assert seen["last_headers"][key[0]] == key[1], model
            sent = {d["model"] for m in doc["models"] if m["name"] == model
                    for d in m["deployments"][:1]}  # fmt: skip
            assert {seen["last_request"]["model"]} == sent, model
            if model == "router-auto":
                assert seen["last_headers"]["http-referer"] == "https://example.com"
                assert seen["last_headers"]["x-title"] == "configbus"
        r = env.post(http, "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"})
        assert r.status_code == 200, r.text
        assert (
            env.a.stats()["last_path"] == "/openai/deployments/my-embedding-deployment/embeddings"
        )


def test_ollama_takes_over_when_vllm_is_off(env: Solo) -> None:
    doc = on_mock(to_builtins(load_file(EXAMPLE)), env.a.url)
    next(p for p in doc["providers"] if p["name"] == "vllm")["enabled"] = False
    env.publish(doc)
    with httpx.Client(timeout=10) as http:
        body = {"model": "local-qwen", "messages": [{"role": "user", "content": "hi"}]}
        r = env.post(http, "/v1/chat/completions", body)
    assert r.status_code == 200 and r.headers["x-configbus-provider"] == "ollama"
    assert env.a.stats()["last_request"]["model"] == "qwen2.5:7b"
