"""The document's Azure providers, model purposes and response cache: what validates, what is
refused and where."""

from __future__ import annotations

from typing import Any

import pytest

from configbus.errors import InvalidDocument
from configbus.testing import sample_data
from configbus.validation import to_document


def issues_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InvalidDocument) as exc:
        to_document(data)
    return [(i.path, i.message) for i in exc.value.issues]


def with_azure(**fields: Any) -> dict[str, Any]:
    data = sample_data()
    data["providers"].append(
        {"name": "az", "type": "azure", "base_url": "https://res.openai.azure.com", **fields}
    )
    data["models"].append({"name": "gpt-az", "deployments": [{"provider": "az", "model": "d1"}]})
    return data


def test_azure_provider_with_api_version_validates() -> None:
    doc = to_document(with_azure(api_version="2024-10-21", api_key={"secret": "k"}))
    p = doc.provider("az")
    assert p is not None and p.type == "azure" and p.api_version == "2024-10-21"


def test_azure_needs_api_version() -> None:
    [(path, message)] = issues_of(with_azure())
    assert path == "providers[2].api_version"
    assert "required for an azure provider" in message


def test_api_version_refused_on_other_types() -> None:
    data = sample_data()
    data["providers"][1]["api_version"] = "2024-10-21"
    assert issues_of(data) == [
        ("providers[1].api_version", "only an azure provider takes api_version")
    ]


@pytest.mark.parametrize("version", ["2024 10", "v1&key=x", "a/b"])
def test_api_version_characters(version: str) -> None:
    [(path, message)] = issues_of(with_azure(api_version=version))
    assert path == "providers[2].api_version" and "letters, digits" in message


def test_azure_base_url_without_query() -> None:
    data = with_azure(api_version="2024-10-21")
    data["providers"][2]["base_url"] = "https://res.openai.azure.com/?api-version=1"
    [(path, message)] = issues_of(data)
    assert path == "providers[2].base_url" and "without a query" in message


def test_embeddings_model_validates_and_defaults_to_chat() -> None:
    data = sample_data()
    data["models"].append(
        {"name": "emb", "purpose": "embeddings", "deployments": [{"provider": "upstream-a",
                                                                  "model": "e"}]}
    )  # fmt: skip
    doc = to_document(data)
    assert doc.model("emb").purpose == "embeddings"  # type: ignore[union-attr]
    assert doc.model("m").purpose == "chat"  # type: ignore[union-attr]


def test_embeddings_on_anthropic_refused() -> None:
    data = sample_data()
    data["providers"].append({"name": "claude", "type": "anthropic", "base_url": "https://a.io"})
    data["models"].append(
        {"name": "emb", "purpose": "embeddings",
         "deployments": [{"provider": "upstream-a", "model": "e"},
                         {"provider": "claude", "model": "c"}]}
    )  # fmt: skip
    assert issues_of(data) == [
        (
            "models[2].deployments[1].provider",
            "provider 'claude' is anthropic: the Messages API has no embeddings",
        )
    ]


def test_fallback_of_another_purpose_refused() -> None:
    data = sample_data()
    data["models"][1]["purpose"] = "embeddings"  # m falls back to m-backup
    assert issues_of(data) == [
        ("models[0].fallbacks[0]", "model 'm-backup' serves embeddings, not chat like 'm'")
    ]


def test_cache_settings() -> None:
    data = sample_data()
    data["models"][0]["cache"] = {"ttl_s": 60}
    cache = to_document(data).models[0].cache
    assert cache is not None and cache.ttl_s == 60 and cache.max_entry_bytes == 262_144
    data["models"][0]["cache"] = {"ttl_s": 0, "max_entry_bytes": 10}
    [(path, message)] = issues_of(data)
    assert path == "models[0].cache.ttl_s" and ">= 1" in message


def test_unknown_purpose_refused_with_path() -> None:
    data = sample_data()
    data["models"][0]["purpose"] = "images"
    [(path, message)] = issues_of(data)
    assert (path, message) == ("models[0].purpose", "invalid enum value 'images'")
