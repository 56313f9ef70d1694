"""The Dockerfile and .dockerignore agree with the code: a Python the project supports, the
console script as an exec-form entrypoint, a non-root user, the packages copied and
installed, the CLI's default ports exposed, and no variable the registry does not know."""

from __future__ import annotations

import json
import re

from packaging.specifiers import SpecifierSet

from configbus import variables
from tests.deploy.support import (
    ROOT,
    dockerfile,
    entry_script,
    image_user,
    packages,
    pyproject,
    server_defaults,
)

WHERE = "Dockerfile"


def final_stage() -> list[dict[str, str]]:
    structure = [i for i in dockerfile().structure if i["instruction"] != "COMMENT"]
    start = max(n for n, i in enumerate(structure) if i["instruction"] == "FROM")
    return structure[start:]


def values(instruction: str, stage: list[dict[str, str]] | None = None) -> list[str]:
    items = dockerfile().structure if stage is None else stage
    return [i["value"] for i in items if i["instruction"] == instruction]


def test_base_image_runs_a_supported_python() -> None:
    base = str(dockerfile().baseimage)
    m = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim(?:-\w+)?", base)
    assert m, f"{WHERE}: final FROM {base!r} is not a python:X.Y-slim image"
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert requires.contains(m.group(1) + ".0"), f"{WHERE}: FROM {base}: not {requires}"


def test_entrypoint_user_and_ports() -> None:
    entry = values("ENTRYPOINT", final_stage())
    assert entry, f"{WHERE}: no ENTRYPOINT"
    assert json.loads(entry[-1]) == [entry_script()], (
        f"{WHERE}: ENTRYPOINT {entry[-1]} should be the exec form [{entry_script()!r}] "
        "(PID 1 gets SIGTERM and drains)"
    )
    assert image_user() not in ("root", "0"), f"{WHERE}: USER {image_user()} is root"
    exposed = {int(p) for line in values("EXPOSE", final_stage()) for p in line.split()}
    wanted = {port for cmd, port in server_defaults().items() if cmd != "up"}
    assert exposed == wanted, f"{WHERE}: EXPOSE {sorted(exposed)}, the CLI's {sorted(wanted)}"


def test_packages_are_copied_and_installed() -> None:
    copied = " ".join(values("COPY") + values("ADD"))
    for needed in (*packages(), "pyproject.toml"):
        assert re.search(rf"(^|\s|/){re.escape(needed)}(\s|/|$)", copied), (
            f"{WHERE}: {needed} is never copied into the image"
        )
    assert any(re.search(r"pip install .*\.(\s|$)", run) for run in values("RUN")), (
        f"{WHERE}: no `pip install .`"
    )


def test_image_environment_is_declared() -> None:
    """A CONFIGBUS_* variable baked into the image is declared and its value parses."""
    for name, value in dockerfile().envs.items():
        var = variables.by_name(name)
        assert var or not name.startswith("CONFIGBUS_"), f"{WHERE}: ENV {name}: not declared"
        if var:
            var.parse(value)


def test_dockerignore() -> None:
    path = ROOT / ".dockerignore"
    patterns = {
        line.strip().rstrip("/")
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".git", ".venv", ".env"):
        assert needed in patterns, f".dockerignore: {needed} is not ignored"
    for kept in (*packages(), "pyproject.toml"):
        assert kept not in patterns, f".dockerignore: {kept} is needed by the build"
