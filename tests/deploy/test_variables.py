"""The settings registry (configbus.variables) is the one list of environment variables:
the settings objects read exactly the variables declared for their command, every name
the code, the docs and the manifests mention is declared, and the docs' tables are
generated from it."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import msgspec
import pytest

from admin.settings import AdminSettings
from configbus import variables
from configbus.document import Provider
from configbus.errors import SettingsError
from configbus.tooling.reference import ENV_END, ENV_START, TARGETS, render_variables, section
from proxy.settings import ProxySettings
from tests.deploy.support import ROOT, packages, rel

NAME = re.compile(r"\bCONFIGBUS_[A-Z0-9_]*[A-Z0-9]\b")


class Recording(Mapping[str, str]):
    """An environment that remembers which variables were asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.asked = values, set[str]()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
        self.asked.add(key)
        return self.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings must ask for their variables by name")

    def __len__(self) -> int:
        return len(self.values)


def declared(command: variables.Command) -> set[str]:
    return {v.name for v in variables.read_by(command)}


def test_each_service_reads_exactly_the_variables_declared_for_it() -> None:
    env = Recording({variables.ADMIN_TOKENS.name: "ops:admin:" + "t" * 32})
    AdminSettings.from_env(env)
    assert env.asked == declared("admin")
    env = Recording({})
    ProxySettings.from_env(env)
    assert env.asked == declared("proxy")


def test_declarations_are_consistent() -> None:
    names = [v.name for v in variables.VARIABLES]
    assert len(names) == len(set(names)), "a variable is declared twice"
    exported = [getattr(variables, n) for n in variables.__all__]
    for var in variables.VARIABLES:
        assert var.name.startswith("CONFIGBUS_") and var.meaning and var.commands, var.name
        assert var.required <= var.commands, f"{var.name}: required by a command not reading it"
        assert not var.instead or variables.by_name(var.instead), f"{var.name}: instead?"
        assert var.check(var.default) == var.default, f"{var.name}: the default is refused"
        assert any(x is var for x in exported), f"{var.name}: not in configbus.variables.__all__"


def test_the_drain_outlasts_the_default_upstream_request() -> None:
    timeout = {f.name: f.default for f in msgspec.structs.fields(Provider)}["timeout_s"]
    assert variables.PROXY_GRACEFUL_TIMEOUT_S.default == timeout


NUMBERS = [v for v in variables.VARIABLES if re.search("[>≥]", v.reader.kind)]


@pytest.mark.parametrize("var", NUMBERS, ids=lambda v: v.name)
def test_bad_numbers_name_the_variable(var: variables.Variable[object]) -> None:
    for raw in ("abc", "0"):
        with pytest.raises(SettingsError, match=f"^{var.name}: "):
            var.parse(raw)


def mentions() -> Iterator[tuple[Path, int, str]]:
    files = [ROOT / "README.md", ROOT / "Dockerfile", ROOT / "docker-compose.yml"]
    files += sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "k8s").glob("*"))
    for pkg in (*packages(), "bench"):
        files += sorted((ROOT / pkg).rglob("*.py"))
    for path in files:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for name in NAME.findall(line):
                yield path, n, name


def test_every_variable_mentioned_anywhere_is_declared() -> None:
    """In the code, the docs and the manifests (comments too: operators read them)."""
    unknown = [f"{rel(p)}:{n}: {name}" for p, n, name in mentions() if not variables.by_name(name)]
    assert not unknown, "not in configbus/variables.py:\n" + "\n".join(unknown)


@pytest.mark.parametrize(
    "path", [p for p, s in TARGETS.items() if (ENV_START, ENV_END) in [x[:2] for x in s]], ids=rel
)
def test_docs_tables_are_generated_from_the_registry(path: Path) -> None:
    assert section(path.read_text(), ENV_START, ENV_END).strip() == render_variables().strip(), (
        f"{rel(path)}: the table of variables is out of date: "
        "run python -m configbus.tooling.reference --write"
    )
