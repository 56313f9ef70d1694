"""What the deployment checks share: the files, the CLI as a container would run it, and the
settings registry (configbus.variables) that every container's environment is checked
against. Nothing here copies a port, a path, a flag or a variable name from the code.
Every failure names the file, the object and the field."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import ipaddress
import os
import shlex
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from dockerfile_parse import DockerfileParser
from starlette.applications import Starlette
from starlette.routing import Match

from configbus import variables
from configbus.cli import build_parser
from configbus.errors import ConfigBusError, SettingsError

ROOT = Path(__file__).resolve().parents[2]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_yaml(path: Path) -> list[Any]:
    try:
        with path.open() as f:  # a named stream: YAML errors name the file and line
            return list(yaml.safe_load_all(f))
    except (OSError, yaml.YAMLError) as exc:
        raise AssertionError(f"{rel(path)}: {exc}") from None


def collect(make: Callable[[], list[Any]]) -> list[Any]:
    """Parameters for a test, or none when the files do not load (a parse test then fails
    with the reason)."""
    try:
        return make()
    except AssertionError:
        return []


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@functools.cache
def entry_script() -> str:
    """The console script whose target is the `main` next to `build_parser`."""
    scripts = pyproject()["project"]["scripts"]
    names = [n for n, target in scripts.items() if target == f"{build_parser.__module__}:main"]
    assert len(names) == 1, f"pyproject.toml: [project.scripts] has no single entry for {names}"
    return names[0]


@functools.cache
def packages() -> tuple[str, ...]:
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return tuple(sorted({p.rstrip("*").rstrip(".") for p in include}))


@functools.cache
def server_defaults() -> dict[str, int]:
    """Subcommands that serve HTTP (they take --port) → their default port."""
    parser = build_parser()
    subs = next(a.choices for a in parser._actions if isinstance(a.choices, dict))
    out = {
        name: int(action.default)
        for name, sub in subs.items()
        for action in sub._actions
        if "--port" in action.option_strings
    }
    assert out, "no configbus subcommand takes --port"
    return out


# --------------------------------------------------------------------------------------
# The environment of a container, against the registry


def check_env(command: str, env: Mapping[str, str], where: str) -> None:
    """Every variable is declared, read by `command` and parses with its reader; every
    variable `command` requires is set."""
    for name, value in env.items():
        var = variables.by_name(name)
        if var is None:
            assert not name.startswith("CONFIGBUS_") and command in variables.DOCUMENT_NAMED, (
                f"{where}.{name}: not a variable of configbus (configbus/variables.py)"
            )
            continue  # may be named by the document (DOCUMENT_NAMED)
        assert command in var.commands, (
            f"{where}.{name}: not read by `configbus {command}` "
            f"(read by {', '.join(sorted(var.commands))})"
        )
        try:
            var.parse(value)
        except SettingsError as exc:
            pytest.fail(f"{where}.{name}: {exc}")
    for var in variables.VARIABLES:
        if command in var.required:
            assert var.name in env or var.instead in env, (
                f"{where}: {var.name} is required by `configbus {command}`"
                + (f" (or {var.instead})" if var.instead else "")
            )


# --------------------------------------------------------------------------------------
# Running a container's command line through the real CLI


@dataclass
class Launch:
    """What `configbus <args>` would start: the uvicorn.run call it makes."""

    command: str
    args: Any
    app: Any
    host: str
    port: int
    kwargs: dict[str, Any]

    @property
    def asgi(self) -> Any:
        return self.app() if self.kwargs.get("factory") else self.app


def parse_args(argv: list[str], where: str) -> Any:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `configbus {shlex.join(argv)}` is refused: {err.getvalue()}")


def run_args(
    args: Any, env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Run the parsed subcommand in `env` (only), `uvicorn.run` recording its calls.
    ConfigBusError propagates."""
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append((a, kw)))
    with monkeypatch.context() as m:
        for name in [n for n in os.environ if n.startswith("CONFIGBUS_")]:
            m.delenv(name)
        for name, value in env.items():
            m.setenv(name, value)
        assert args.func(args) == 0
    return calls


def launch(
    argv: list[str], env: Mapping[str, str], where: str, monkeypatch: pytest.MonkeyPatch
) -> Launch:
    """What `configbus <argv>` serves, run up to `uvicorn.run` in `env`."""
    args = parse_args(argv, where)
    assert args.command in server_defaults(), (
        f"{where}: `configbus {args.command}` does not serve HTTP "
        f"(those that do: {sorted(server_defaults())})"
    )
    try:
        calls = run_args(args, env, monkeypatch)
    except ConfigBusError as exc:
        pytest.fail(f"{where}: `configbus {args.command}` refuses its settings: {exc}")
    assert len(calls) == 1, f"{where}: `configbus {args.command}` did not serve"
    (app, *_), kwargs = calls[0]
    run = Launch(args.command, args, app, kwargs["host"], kwargs["port"], kwargs)
    check_host(run, where)
    return run


def check_host(run: Launch, where: str) -> None:
    try:
        loopback = ipaddress.ip_address(run.host).is_loopback
    except ValueError:
        loopback = run.host == "localhost"
    assert not loopback, (
        f"{where}: `configbus {run.command}` listens on {run.host} (loopback): "
        "unreachable from outside the container, pass --host 0.0.0.0"
    )


async def get_status(app: Any, path: str) -> int:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        return (await c.get(path)).status_code


def endpoint(app: Any, path: str) -> str | None:
    """Name of the endpoint answering GET `path` (None: 404)."""
    if not isinstance(app, Starlette):  # a bare ASGI app (mock upstream): ask it
        return None if asyncio.run(get_status(app, path)) == 404 else path
    scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
    for route in app.routes:
        if route.matches(scope)[0] == Match.FULL:
            found = getattr(route, "endpoint", None)
            return getattr(found, "__name__", type(found).__name__)
    return None


def check_path(run: Launch, path: str, kind: str, where: str) -> None:
    """`path` is a GET route of the process; a readiness/liveness probe hits that endpoint."""
    name = endpoint(run.asgi, path)
    assert name is not None, f"{where}: {path!r} is not a GET route of `configbus {run.command}`"
    if kind and isinstance(run.asgi, Starlette):
        assert kind in name, f"{where}: {path!r} is served by {name!r}, not a {kind}ness endpoint"


# --------------------------------------------------------------------------------------
# The Dockerfile


@functools.cache
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(ROOT / "Dockerfile"))


def image_user() -> str:
    users = [i["value"] for i in dockerfile().structure if i["instruction"] == "USER"]
    assert users, "Dockerfile: no USER (the image would run as root)"
    return str(users[-1]).split(":")[0]
