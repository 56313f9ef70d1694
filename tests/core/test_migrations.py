"""Schema versions: a document is migrated to the current schema on input and on read,
one step at a time; a newer one is refused with a message saying so. Every step in
`STEPS` has its own case in `STEP_CASES` (a step without one fails this module)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from configbus.cli import main
from configbus.codec import canonical, decode_body
from configbus.document import CURRENT_SCHEMA
from configbus.errors import InvalidDocument
from configbus.migrations import STEPS, migrate
from configbus.testing import sample_data
from configbus.validation import to_document

# from-version → (a document of that schema, the same document after the step)
STEP_CASES: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}


def test_every_step_has_its_case_and_the_chain_reaches_the_current_schema() -> None:
    assert set(STEPS) == set(range(1, CURRENT_SCHEMA))
    assert set(STEP_CASES) == set(STEPS)


@pytest.mark.parametrize("version", sorted(STEPS))
def test_step(version: int) -> None:  # pragma: no cover - no step exists yet
    before, after = STEP_CASES[version]
    _, step = STEPS[version]
    assert step(dict(before)) == after


def test_an_unversioned_document_is_schema_1_and_keeps_its_bytes() -> None:
    data = sample_data()
    doc = to_document(data)
    assert doc.schema_version == 1
    assert b"schema_version" not in canonical(doc)  # stored bodies did not change
    assert to_document({**data, "schema_version": 1}) == doc


def test_steps_run_in_order_and_stamp_each_version() -> None:
    steps = {
        1: ("rename level", lambda d: {"level": d.pop("lvl"), **d}),
        2: ("upper level", lambda d: {**d, "level": d["level"].upper()}),
    }
    data, applied = migrate({"lvl": "info"}, steps=steps, current=3)
    assert data == {"level": "INFO", "schema_version": 3}
    assert applied == ["schema 1 → 2: rename level", "schema 2 → 3: upper level"]
    assert migrate({"schema_version": 2, "level": "x"}, steps=steps, current=3)[1] == [
        "schema 2 → 3: upper level"
    ]
    with pytest.raises(InvalidDocument, match="no migration from schema 0"):
        migrate({"schema_version": 0}, steps=steps, current=3)


def test_a_newer_schema_is_refused_on_input_and_on_read() -> None:
    newer = {**sample_data(), "schema_version": CURRENT_SCHEMA + 1}
    with pytest.raises(InvalidDocument) as exc:
        to_document(newer)
    (issue,) = exc.value.issues
    assert issue.path == "schema_version" and "newer than this configbus reads" in issue.message
    body = json.dumps(newer).encode()
    with pytest.raises(InvalidDocument, match="newer than this configbus reads"):
        decode_body(body)


def test_a_bad_schema_version_is_reported_with_its_path() -> None:
    with pytest.raises(InvalidDocument) as exc:
        to_document({**sample_data(), "schema_version": "one"})
    assert exc.value.issues[0].path == "schema_version"


def test_configbus_migrate_prints_the_document(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "doc.json"
    f.write_text(json.dumps(sample_data()))
    assert main(["migrate", str(f)]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == sample_data()
    assert f"already schema {CURRENT_SCHEMA}" in out.err
    f.write_text(json.dumps({**sample_data(), "schema_version": 99}))
    assert main(["migrate", str(f)]) == 1
    assert "schema_version: schema 99 is newer" in capsys.readouterr().err
    assert main(["migrate", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
