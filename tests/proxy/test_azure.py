"""Azure OpenAI upstreams: the deployment URL, `api-version`, the `api-key` header, and
Azure's error bodies in OpenAI's shape (unit, then a replica against the mock)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from configbus.document import CircuitBreaker, Provider
from proxy.azure import error_to_openai
from proxy.upstream import ProviderRuntime
from tests.proxy.helpers import data_for
from tests.proxy.solo import Solo, http, solo
from tests.support import RedisServer

__all__ = ["http"]  # a fixture: imported for pytest

AZURE = {"type": "azure", "api_version": "2024-10-21"}


def runtime(**fields: Any) -> ProviderRuntime:
    p = msgspec.convert({"name": "az", "base_url": "https://r.openai.azure.com/", **fields},
                        Provider)  # fmt: skip
    return ProviderRuntime(p, CircuitBreaker(), None, env={})


def test_deployment_urls_and_key_header() -> None:
    p = runtime(**AZURE, api_key={"secret": "k1"})
    assert p.url_for("chat", "my gpt/4o") == (
        "https://r.openai.azure.com/openai/deployments/my%20gpt%2F4o/chat/completions"
        "?api-version=2024-10-21"
    )
    assert p.url_for("embeddings", "emb") == (
        "https://r.openai.azure.com/openai/deployments/emb/embeddings?api-version=2024-10-21"
    )
    assert p.headers["api-key"] == "k1" and "authorization" not in p.headers


def test_openai_urls_unchanged() -> None:
    p = runtime(api_key={"secret": "k1"})
    assert p.url_for("chat", "x") == "https://r.openai.azure.com/chat/completions" == p.url
    assert p.url_for("embeddings", "x") == "https://r.openai.azure.com/embeddings"
    assert p.headers["authorization"] == "Bearer k1"


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            {"error": {"code": "content_filter", "message": "filtered", "param": "prompt",
                       "status": 400, "innererror": {"code": "ResponsibleAIPolicyViolation"}}},
            {"message": "filtered", "type": "invalid_request_error", "code": "content_filter",
             "param": "prompt"},
        ),
        (
            404,
            {"error": {"code": "DeploymentNotFound", "message": "no such deployment"}},
            {"message": "no such deployment", "type": "invalid_request_error",
             "code": "DeploymentNotFound"},
        ),
        (
            401,
            {"statusCode": 401, "message": "Access denied due to invalid subscription key."},
            {"message": "Access denied due to invalid subscription key.",
             "type": "authentication_error", "code": None},
        ),
        (
            429,
            {"error": {"code": "429", "message": "Rate limit is exceeded."}},
            {"message": "Rate limit is exceeded.", "type": "rate_limit_error", "code": "429"},
        ),
        (
            500,
            b"<html>oops</html>",
            {"message": "upstream answered 500", "type": "server_error", "code": None},
        ),
    ],
)  # fmt: skip
def test_error_shapes(status: int, body: Any, expected: dict[str, Any]) -> None:
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    assert msgspec.json.decode(error_to_openai(status, raw)) == {"error": expected}


@pytest.fixture(scope="module")
def env(redis_server: RedisServer) -> Iterator[Solo]:
    with solo(redis_server, "azure", AZURE_KEY="az-env-key") as s:
        yield s


def azure_doc(env: Solo, **provider: Any) -> dict[str, Any]:
    data = data_for(env.a, env.b)
    data["providers"].append(
        {"name": "az", "base_url": env.a.url, **AZURE, "api_key": {"secret": "az-secret"},
         "max_retries": 0, **provider}
    )  # fmt: skip
    data["models"] += [
        {"name": "gpt-az", "deployments": [{"provider": "az", "model": "dep-4o"}]},
        {"name": "emb-az", "purpose": "embeddings",
         "deployments": [{"provider": "az", "model": "dep-emb"}]},
    ]  # fmt: skip
    return data


@pytest.mark.slow
def test_chat_goes_to_the_deployment_url_with_api_key(env: Solo, http: httpx.Client) -> None:
    env.publish(azure_doc(env))
    msgs = [{"role": "user", "content": "hi"}]
    r = env.post(http, "/v1/chat/completions", {"model": "gpt-az", "messages": msgs})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "dep-4o" and r.headers["x-configbus-provider"] == "az"
    seen = env.a.stats()
    assert seen["last_path"] == "/openai/deployments/dep-4o/chat/completions"
    assert seen["last_query"] == "api-version=2024-10-21"
    assert seen["last_headers"]["api-key"] == "az-secret"
    assert "authorization" not in seen["last_headers"]
    # A stream too, relayed as OpenAI's chunks.
    r = env.post(http, "/v1/chat/completions",
                 {"model": "gpt-az", "messages": msgs, "stream": True})  # fmt: skip
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    assert "served by A" in "".join(
        msgspec.json.decode(line[6:])["choices"][0]["delta"].get("content", "")
        for line in r.text.splitlines()
        if line.startswith("data: {") and msgspec.json.decode(line[6:])["choices"]
    )


@pytest.mark.slow
def test_embeddings_and_env_key(env: Solo, http: httpx.Client) -> None:
    doc = azure_doc(env)
    del doc["providers"][-1]["api_key"]
    doc["providers"][-1]["api_key_env"] = "AZURE_KEY"
    env.publish(doc)
    r = env.post(http, "/v1/embeddings", {"model": "emb-az", "input": ["a", "b"]})
    assert r.status_code == 200, r.text
    assert [d["index"] for d in r.json()["data"]] == [0, 1]
    seen = env.a.stats()
    assert seen["last_path"] == "/openai/deployments/dep-emb/embeddings"
    assert seen["last_query"] == "api-version=2024-10-21"
    assert seen["last_headers"]["api-key"] == "az-env-key"


@pytest.mark.slow
def test_azure_errors_reach_the_client_in_openai_shape(env: Solo, http: httpx.Client) -> None:
    env.publish(azure_doc(env))
    env.a.control(fail_rate=1.0, status=400)
    msgs = [{"role": "user", "content": "hi"}]
    r = env.post(http, "/v1/chat/completions", {"model": "gpt-az", "messages": msgs})
    assert r.status_code == 400
    assert r.json() == {
        "error": {"message": "A mock failure", "type": "invalid_request_error",
                  "code": "content_filter", "param": "prompt"}
    }  # fmt: skip


@pytest.mark.slow
def test_a_refused_key_is_the_gateways_problem(env: Solo, http: httpx.Client) -> None:
    doc = azure_doc(env)
    del doc["providers"][-1]["api_key"]  # no key: the mock answers 401 like Azure does
    env.publish(doc)
    msgs = [{"role": "user", "content": "hi"}]
    r = env.post(http, "/v1/chat/completions", {"model": "gpt-az", "messages": msgs})
    assert r.status_code == 502
    assert "refused the gateway's credentials (401)" in r.json()["error"]["message"]
