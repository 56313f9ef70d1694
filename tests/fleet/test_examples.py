from __future__ import annotations

from pathlib import Path

import pytest

from configbus.codec import load_file
from configbus.errors import InvalidDocument

EXAMPLES = Path(__file__).resolve().parents[2] / "configbus" / "tooling" / "examples"


@pytest.mark.parametrize("name", ["fleet.yaml", "fleet-v2.yaml", "broken-provider.yaml"])
def test_examples_are_valid(name: str) -> None:
    doc = load_file(EXAMPLES / name)
    assert doc.model("chat") is not None


def test_broken_example_fails_where_the_tour_says() -> None:
    with pytest.raises(InvalidDocument) as info:
        load_file(EXAMPLES / "broken.yaml")
    assert [str(i) for i in info.value.issues] == [
        "models[0].fallbacks[0]: unknown model 'chat-backpu'"
    ]


def test_broken_provider_example_is_valid_and_leaves_chat_no_way_out() -> None:
    """Valid (only traffic shows what is wrong): chat's one provider is on a dead port and
    nothing falls back, so the tour's canary fails every request."""
    doc = load_file(EXAMPLES / "broken-provider.yaml")
    chat = doc.model("chat")
    assert chat is not None and not chat.fallbacks
    providers = {p.name: p for p in doc.providers}
    assert [providers[d.provider].base_url for d in chat.deployments] == ["http://127.0.0.1:9/v1"]
