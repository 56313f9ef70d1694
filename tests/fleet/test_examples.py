from __future__ import annotations

from pathlib import Path

import pytest

from configbus.codec import load_file
from configbus.errors import InvalidDocument

EXAMPLES = Path(__file__).resolve().parents[2] / "configbus" / "tooling" / "examples"


@pytest.mark.parametrize("name", ["fleet.yaml", "fleet-v2.yaml"])
def test_examples_are_valid(name: str) -> None:
    doc = load_file(EXAMPLES / name)
    assert doc.model("chat") is not None


def test_broken_example_fails_where_the_tour_says() -> None:
    with pytest.raises(InvalidDocument) as info:
        load_file(EXAMPLES / "broken.yaml")
    assert [str(i) for i in info.value.issues] == [
        "models[0].fallbacks[0]: unknown model 'chat-backpu'"
    ]
