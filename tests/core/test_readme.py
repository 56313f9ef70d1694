from __future__ import annotations

from pathlib import Path

from configbus.tooling.reference import END, START, missing_descriptions, render

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_opens_with_the_two_commands() -> None:
    text = README.read_text()
    first_block = text.split("```")[1]
    assert "make up" in first_block and "make test" in first_block


def test_configuration_reference_matches_the_schema() -> None:
    text = README.read_text()
    section = text.split(START, 1)[1].split(END, 1)[0]
    assert section.strip() == render().strip(), (
        "README's reference is out of date: run python -m configbus.tooling.reference --write"
    )


def test_every_schema_field_is_described() -> None:
    assert missing_descriptions() == []
