"""Document schema versions and the steps between them.

A document says which format it is written in (`schema_version`, absent: 1). Input (admin,
CLI) and stored bodies read by a replica are migrated to `CURRENT_SCHEMA` before they are
checked, one step at a time, so what is stored is always the newest format; a document
newer than this code knows is refused with a message saying so (a replica keeps serving
what it has: an older replica never half-reads a newer format).

`STEPS[n]` turns a schema-`n` document (plain data, as parsed) into schema `n + 1`. Each
step has its own test (tests/core/test_migrations.py refuses a step without one). Schema 1
is the only schema so far: every change to the document until now added optional fields,
so no step has been needed yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from configbus.document import CURRENT_SCHEMA, UNVERSIONED_SCHEMA
from configbus.errors import InvalidDocument, Issue

Step = Callable[[dict[str, Any]], dict[str, Any]]

# from-version → (what the step changes, the step)
STEPS: Mapping[int, tuple[str, Step]] = {}


def schema_of(data: Any) -> int | None:
    """The schema a parsed document declares (1 when it declares none); None when the
    value is not an integer (the document's checks report that with its path)."""
    if not isinstance(data, dict):
        return None
    version = data.get("schema_version", UNVERSIONED_SCHEMA)
    if isinstance(version, bool) or not isinstance(version, int):
        return None
    return version


def migrate(
    data: Any,
    *,
    steps: Mapping[int, tuple[str, Step]] = STEPS,
    current: int = CURRENT_SCHEMA,
) -> tuple[Any, list[str]]:
    """`data` in schema `current`, and what each step applied changed. Raises
    InvalidDocument for a schema newer than `current`, or one no step leads on from."""
    version = schema_of(data)
    if version is None or version == current:
        return data, []
    if version > current:
        raise InvalidDocument(
            [
                Issue(
                    "schema_version",
                    f"schema {version} is newer than this configbus reads ({current}): upgrade it",
                )
            ]
        )
    applied = []
    while version < current:
        if version not in steps:
            raise InvalidDocument([Issue("schema_version", f"no migration from schema {version}")])
        what, step = steps[version]
        data = step(dict(data))
        version += 1
        data["schema_version"] = version
        applied.append(f"schema {version - 1} → {version}: {what}")
    return data, applied
