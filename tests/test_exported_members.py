"""`configbus` is a library with a curated surface: what the apps use of it is exported."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import configbus

ROOT = Path(__file__).resolve().parent.parent


def imports_of_configbus(package: str) -> list[tuple[str, str, str]]:
    """(file, module, name) of every `from configbus... import name` in `package`."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("configbus"):
                found += [
                    (str(path.relative_to(ROOT)), node.module or "", a.name) for a in node.names
                ]
            elif isinstance(node, ast.Import):
                found += [
                    (str(path.relative_to(ROOT)), a.name, "")
                    for a in node.names
                    if a.name.startswith("configbus")
                ]
    return found


@pytest.mark.parametrize("package", ["admin", "proxy"])
def test_apps_use_only_what_configbus_exports(package: str) -> None:
    exported = set(configbus.__all__)
    missing = []
    for where, module, name in imports_of_configbus(package):
        parts = module.split(".")
        assert parts[1:2] not in (["tooling"], ["cli"]), f"{where}: imports {module}"
        if module == "configbus":
            ok = name in exported
        else:
            # A name from a submodule, or the submodule itself exported as a namespace.
            ok = name in exported or parts[1] in exported
        if not ok:
            missing.append(f"{where}: {module}.{name}")
    assert not missing, "not in configbus.__all__:\n" + "\n".join(missing)


def test_every_exported_name_resolves_once() -> None:
    # (Its order is ruff's: RUF022 keeps __all__ sorted.)
    assert len(set(configbus.__all__)) == len(configbus.__all__)
    for name in configbus.__all__:
        assert hasattr(configbus, name), name


def test_importing_the_library_pulls_in_no_tooling_and_no_fakeredis() -> None:
    import subprocess
    import sys

    code = (
        "import sys, configbus, configbus.api, configbus.rollout, configbus.variables;"
        "bad = [m for m in sys.modules if m == 'configbus.cli' or m.startswith(('fakeredis',"
        " 'configbus.tooling', 'configbus.cli.', 'admin', 'proxy'))];"  # not configbus.clientkeys
        " print(bad); sys.exit(bool(bad))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    importlib.import_module("configbus")
