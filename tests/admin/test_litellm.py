"""`configbus import-litellm`: the example configs of LiteLLM's proxy documentation, written
here by hand with the mock upstream's URL in place of the real services, become documents
that validate, publish and serve a chat completion through a replica; every setting not
carried over is listed."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from configbus.cli import main
from configbus.tooling.client import AdminClient
from configbus.tooling.litellm import convert
from configbus.validation import to_document
from tests.admin.helpers import SECRET_KEY, TOKENS, app_for, serve
from tests.proxy.helpers import Mock, Replica
from tests.support import RedisServer, wait_for

MOCK = "http://127.0.0.1:4010"  # replaced by the running mock's URL

# docs.litellm.ai/docs/proxy/configs, "Quick Start": Azure, Bedrock, an OpenAI-compatible
# vLLM server, a wildcard, module settings and a master key.
QUICK_START = f"""
model_list:
  - model_name: gpt-3.5-turbo ### RECEIVED MODEL NAME ###
    litellm_params:
      model: azure/gpt-turbo-small-eu ### MODEL NAME sent to `litellm.completion()` ###
      api_base: https://my-endpoint-europe-berri-992.openai.azure.com/
      api_key: "os.environ/AZURE_API_KEY_EU" # does os.getenv("AZURE_API_KEY_EU")
      rpm: 6      # [OPTIONAL] Rate limit for this deployment: in requests per minute (rpm)
  - model_name: bedrock-claude-v1
    litellm_params:
      model: bedrock/anthropic.claude-instant-v1
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: azure/gpt-turbo-small-ca
      api_base: https://my-endpoint-canada-berri992.openai.azure.com/
      api_key: "os.environ/AZURE_API_KEY_CA"
      rpm: 6
  - model_name: vllm-models
    litellm_params:
      model: openai/facebook/opt-125m # the `openai/` prefix tells litellm it's openai compatible
      api_base: {MOCK}/v1
      api_key: none
      rpm: 1440
    model_info:
      version: 2
  - model_name: "*"
    litellm_params:
      model: "*"

litellm_settings:
  drop_params: True
  success_callback: ["langfuse"]

general_settings:
  master_key: sk-1234
  alerting: ["slack"]
"""

# docs.litellm.ai/docs/proxy/load_balancing: weighted OpenAI deployments (the doc's are
# Azure; here OpenAI with `api_base` at the mock), router settings with Redis.
LOAD_BALANCING = f"""
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_base: {MOCK}/v1
      api_key: os.environ/OPENAI_API_KEY
      weight: 9
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: {MOCK}/v1
      api_key: os.environ/OPENAI_API_KEY
      weight: 1
      rpm: 1440
      tpm: 100000
  - model_name: llama3
    litellm_params:
      model: groq/llama3-8b-8192
      api_base: {MOCK}/v1
      api_key: os.environ/GROQ_API_KEY

router_settings:
  routing_strategy: simple-shuffle
  model_group_alias: {{"gpt-4": "gpt-4o"}}
  num_retries: 2
  timeout: 30
  redis_host: my-redis
  redis_password: my-password
  redis_port: 1992

general_settings:
  master_key: sk-1234
"""

# docs.litellm.ai/docs/proxy/reliability: fallbacks, retries, timeouts (HuggingFace
# deployments become hosted vLLM ones here; the doc's own stay as they are).
RELIABILITY = f"""
model_list:
  - model_name: zephyr-beta
    litellm_params:
        model: hosted_vllm/HuggingFaceH4/zephyr-7b-beta
        api_base: {MOCK}/v1
  - model_name: zephyr-beta
    litellm_params:
        model: huggingface/HuggingFaceH4/zephyr-7b-beta
        api_base: http://0.0.0.0:8002
  - model_name: gpt-3.5-turbo
    litellm_params:
        model: gpt-3.5-turbo
        api_base: {MOCK}/v1
        api_key: sk-my-openai-key
  - model_name: gpt-3.5-turbo-16k
    litellm_params:
        model: gpt-3.5-turbo-16k
        api_base: {MOCK}/v1
        api_key: sk-my-openai-key

litellm_settings:
  num_retries: 3
  request_timeout: 10
  fallbacks: [{{"zephyr-beta": ["gpt-3.5-turbo"]}}]
  context_window_fallbacks: [{{"zephyr-beta": ["gpt-3.5-turbo-16k"]}}]
  allowed_fails: 3

general_settings:
  master_key: sk-1234
"""

# docs.litellm.ai/docs/providers/anthropic, "Proxy": an Anthropic model, its key from the
# environment, and an OpenAI fallback.
ANTHROPIC = f"""
model_list:
  - model_name: claude-3
    litellm_params:
      model: anthropic/claude-3-opus-20240229
      api_base: {MOCK}
      api_key: "os.environ/ANTHROPIC_API_KEY"
  - model_name: gpt-4
    litellm_params:
      model: openai/gpt-4
      api_base: {MOCK}/v1
      api_key: os.environ/OPENAI_API_KEY
      temperature: 0.2

router_settings:
  fallbacks: [{{"claude-3": ["gpt-4"]}}]
  routing_strategy: latency-based-routing

general_settings:
  master_key: sk-1234
  database_url: postgresql://user:pass@localhost/litellm
"""

EXAMPLES = {
    "quick_start": (QUICK_START, "vllm-models"),
    "load_balancing": (LOAD_BALANCING, "gpt-4o"),
    "reliability": (RELIABILITY, "zephyr-beta"),
    "anthropic": (ANTHROPIC, "claude-3"),
}


def converted(text: str, url: str = MOCK) -> tuple[dict[str, Any], list[str]]:
    c = convert(yaml.safe_load(text.replace(MOCK, url)))
    return c.document, c.dropped


def test_quick_start_carries_what_it_can_and_lists_the_rest() -> None:
    doc, dropped = converted(QUICK_START)
    to_document(doc)
    assert [m["name"] for m in doc["models"]] == ["gpt-3.5-turbo", "vllm-models"]
    eu, ca, vllm = doc["providers"]
    # Azure: the resource URL, an api_version (assumed, and said so), the key from the env;
    # each deployment's rpm on a provider of its own.
    assert eu == {
        "name": "azure-gpt-3.5-turbo", "type": "azure",
        "base_url": "https://my-endpoint-europe-berri-992.openai.azure.com",
        "api_version": "2024-10-21", "api_key_env": "AZURE_API_KEY_EU", "rate_limit": {"rpm": 6},
    }  # fmt: skip
    assert ca["api_key_env"] == "AZURE_API_KEY_CA" and ca["type"] == "azure"
    assert doc["models"][0]["deployments"] == [
        {"provider": eu["name"], "model": "gpt-turbo-small-eu", "weight": 1},
        {"provider": ca["name"], "model": "gpt-turbo-small-ca", "weight": 1},
    ]
    assert vllm["base_url"] == f"{MOCK}/v1" and vllm["api_key"] == {"secret": "none"}
    assert vllm["rate_limit"] == {"rpm": 1440}
    assert doc["models"][1]["deployments"] == [
        {"provider": vllm["name"], "model": "facebook/opt-125m", "weight": 1}
    ]
    assert doc["clients"] == [
        {"name": "litellm-master-key", "key_sha256": hashlib.sha256(b"sk-1234").hexdigest()}
    ]
    text = "\n".join(dropped)
    assert "model_list[0].litellm_params.api_version: not given: 2024-10-21 assumed" in text
    assert "model_list[2].litellm_params.api_version: not given: 2024-10-21 assumed" in text
    assert "model_list[1]: not carried over: 'bedrock/anthropic.claude-instant-v1'" in text
    assert "model_list[4]: not carried over: model_name '*'" in text
    for path in (
        "model_list[3].model_info",
        "litellm_settings.drop_params",
        "litellm_settings.success_callback",
        "general_settings.alerting",
    ):
        assert f"{path}: " in text, path
    assert len(dropped) == 8


def test_load_balancing_keeps_weights_limits_and_env_keys() -> None:
    doc, dropped = converted(LOAD_BALANCING)
    to_document(doc)
    shared, limited, groq = doc["providers"]
    assert shared == {
        "name": "openai",
        "type": "openai",
        "base_url": f"{MOCK}/v1",
        "api_key_env": "OPENAI_API_KEY",
        "timeout_s": 30.0,
        "max_retries": 2,
    }
    assert limited["name"] == "openai-gpt-4o" and limited["rate_limit"] == {
        "rpm": 1440,
        "tpm": 100000,
    }
    assert groq["api_key_env"] == "GROQ_API_KEY"
    gpt4o = doc["models"][0]
    assert [(d["provider"], d["model"], d["weight"]) for d in gpt4o["deployments"]] == [
        ("openai", "gpt-4o", 9),
        ("openai-gpt-4o", "gpt-4o-mini", 1),
    ]
    assert sorted(d.split(":")[0] for d in dropped) == [
        "router_settings.model_group_alias",
        "router_settings.redis_host",
        "router_settings.redis_password",
        "router_settings.redis_port",
    ]


def test_reliability_maps_fallbacks_retries_and_timeouts() -> None:
    doc, dropped = converted(RELIABILITY)
    to_document(doc)
    models = {m["name"]: m for m in doc["models"]}
    assert models["zephyr-beta"]["fallbacks"] == ["gpt-3.5-turbo"]
    assert len(models["zephyr-beta"]["deployments"]) == 1  # the HuggingFace one is listed
    assert all(p["max_retries"] == 3 and p["timeout_s"] == 10 for p in doc["providers"])
    # Two OpenAI entries with one key and URL share one provider; the key is a secret.
    openai = [p for p in doc["providers"] if p["name"] == "openai"]
    assert len(openai) == 1 and openai[0]["api_key"] == {"secret": "sk-my-openai-key"}
    text = "\n".join(dropped)
    assert "model_list[1]: not carried over: 'huggingface/HuggingFaceH4/zephyr-7b-beta'" in text
    assert "litellm_settings.context_window_fallbacks: " in text
    assert "litellm_settings.allowed_fails: " in text


def test_anthropic_and_unmapped_router_settings() -> None:
    doc, dropped = converted(ANTHROPIC)
    to_document(doc)
    claude = doc["providers"][0]
    assert claude["type"] == "anthropic" and claude["api_key_env"] == "ANTHROPIC_API_KEY"
    assert doc["models"][0]["fallbacks"] == ["gpt-4"]
    assert sorted(d.split(":")[0] for d in dropped) == [
        "general_settings.database_url",
        "model_list[1].litellm_params.temperature",
        "router_settings.routing_strategy",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- just a list", "a litellm config is a mapping"),
        ("model_list: 3", "model_list: expected a list"),
        ("model_list: [\n", "yaml"),
    ],
)
def test_cli_refuses_what_is_not_a_litellm_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    f = tmp_path / "config.yaml"
    f.write_text(text)
    assert main(["import-litellm", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("configbus import-litellm: ") and message in err.lower()
    assert "Traceback" not in err
    assert main(["import-litellm", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.fixture
def mock() -> Iterator[Mock]:
    m = Mock("litellm").start()
    yield m
    m.service.stop()


def test_every_example_validates_publishes_and_serves_through_a_replica(
    redis_server: RedisServer,
    namespace: str,
    mock: Mock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        "CONFIGBUS_SECRET_KEYS": SECRET_KEY,
        **{k: "sk-env" for k in ("OPENAI_API_KEY", "GROQ_API_KEY", "ANTHROPIC_API_KEY")},
    }
    replica = Replica(redis_server.url, namespace, replica_id=f"{namespace}-r1", env=env)
    with serve(app_for(redis_server.url)) as admin_url:
        replica.start()
        admin = AdminClient(admin_url, token=TOKENS["admin"][1], namespace=namespace)
        try:
            for name, (text, model) in EXAMPLES.items():
                config = tmp_path / f"{name}.yaml"
                config.write_text(text.replace(MOCK, mock.url))
                out = tmp_path / f"{name}.configbus.yaml"
                assert main(["import-litellm", str(config), "-o", str(out)]) == 0, name
                printed = capsys.readouterr()
                assert printed.out == ""
                assert printed.err.startswith("not carried over from")
                document = yaml.safe_load(out.read_text())
                assert admin.validate(document).valid
                version = admin.publish(document, message=f"import {name}").version
                wait_for(lambda v=version: replica.version() == v, timeout=10, what=name)
                r = httpx.post(
                    replica.url + "/v1/chat/completions",
                    headers={"authorization": "Bearer sk-1234"},
                    json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                    timeout=10,
                )
                assert r.status_code == 200, (name, r.text)
                content = r.json()["choices"][0]["message"]["content"]
                assert "served by litellm" in content, (name, content)
        finally:
            admin.close()
            replica.service.stop()
