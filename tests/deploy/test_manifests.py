"""The deployment files (Dockerfile, docker-compose.yml, k8s/) agree with the code.

Nothing here copies a port, a path, a flag or a variable name from the code: the truth is
derived from it. Each container's arguments go through the real `configbus` argument
parser and the real subcommand, with `uvicorn.run` replaced by a recorder, so the test sees
the host, port, app and shutdown timeout the process would really use and the settings it
would really build from the container's environment. Probe and healthcheck paths are
matched against the routes of that app. Environment variable names are checked against the
`CONFIGBUS_*` names found in the sources of the modules that the subcommand imports.

Every failure names the file, the object and the field.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import functools
import io
import ipaddress
import json
import os
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import uvicorn
import yaml
from packaging.specifiers import SpecifierSet
from starlette.applications import Starlette
from starlette.routing import Match

from configbus.cli import build_parser
from configbus.crypto import generate_key
from configbus.document import Provider
from configbus.errors import ConfigBusError

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "k8s"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
# The Kubernetes version whose schemas the manifests are validated against (oldest still
# widely run; everything used here is GA well before it).
K8S_VERSION = "1.29"

ENV_NAME = re.compile(r"\bCONFIGBUS_[A-Z0-9_]*[A-Z0-9]\b")
PLACEHOLDER = re.compile(r"REPLACE_WITH_[A-Za-z0-9_]+")
COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def load_yaml(path: Path) -> list[Any]:
    try:
        with path.open() as f:  # a named stream: YAML errors name the file and line
            return list(yaml.safe_load_all(f))
    except (OSError, yaml.YAMLError) as exc:
        raise AssertionError(f"{rel(path)}: {exc}") from None


def collect(make: Callable[[], list[Any]]) -> list[Any]:
    """Parameters for a test, or none when the files do not load (test_yaml_files_parse
    then fails with the reason)."""
    try:
        return make()
    except AssertionError:
        return []


# --------------------------------------------------------------------------------------
# The truth, from the code


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text())


@functools.cache
def entry_script() -> str:
    """The console script whose target is the `main` next to `build_parser`."""
    scripts = pyproject()["project"]["scripts"]
    names = [n for n, target in scripts.items() if target == f"{build_parser.__module__}:main"]
    assert len(names) == 1, f"pyproject.toml: [project.scripts] has no single entry for {names}"
    return names[0]


@functools.cache
def subparsers() -> dict[str, Any]:
    parser = build_parser()
    for action in parser._actions:
        if action.choices and isinstance(action.choices, dict):
            return dict(action.choices)
    raise AssertionError("configbus.cli.build_parser(): no subcommands")


@functools.cache
def server_defaults() -> dict[str, int]:
    """Subcommands that serve HTTP (they take --port) → their default port."""
    out = {}
    for name, sub in subparsers().items():
        for action in sub._actions:
            if "--port" in action.option_strings:
                out[name] = int(action.default)
    assert out, "no configbus subcommand takes --port"
    return out


def _module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def env_vars_of_module(module: str) -> frozenset[str]:
    """CONFIGBUS_* names in the sources of `module` and every project module it imports."""
    seen: set[Path] = set()
    todo = [module]
    names: set[str] = set()
    while todo:
        path = _module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        source = path.read_text()
        names.update(ENV_NAME.findall(source))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                todo.extend(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                todo.append(node.module)
                todo.extend(f"{node.module}.{a.name}" for a in node.names)
    return frozenset(names)


@functools.cache
def all_code_env_vars() -> frozenset[str]:
    names: set[str] = set()
    for pkg in packages():
        for path in (ROOT / pkg).rglob("*.py"):
            names.update(ENV_NAME.findall(path.read_text()))
    assert names, "no CONFIGBUS_* variable found in the sources"
    return frozenset(names)


# Subcommands that also read variables named at run time: a proxy reads the upstream API
# key from the variable a document's provider names in `api_key_env`.
DYNAMIC_ENV = {"proxy": "a provider's api_key_env"}


def check_env_names(command: str, names: list[str], where: str) -> None:
    readable = env_vars_of_subcommand(command)
    for var in names:
        if "CONFIGBUS" not in var and command in DYNAMIC_ENV:
            continue  # may be named by the document (DYNAMIC_ENV)
        assert var in readable, (
            f"{where}.{var}: not read by `configbus {command}` (it reads {sorted(readable)})"
        )


def env_vars_of_subcommand(command: str) -> frozenset[str]:
    func = subparsers()[command].get_default("func")
    return env_vars_of_module(func.__module__)


@functools.cache
def packages() -> tuple[str, ...]:
    include = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    return tuple(sorted({p.rstrip("*").rstrip(".") for p in include}))


@functools.cache
def longest_default_request_s() -> float:
    """The default upstream timeout of a provider (a request may wait this long)."""
    fields = {f.name: f.default for f in msgspec.structs.fields(Provider)}
    return float(fields["timeout_s"])


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


def launch(
    argv: list[str], env: dict[str, str], where: str, monkeypatch: pytest.MonkeyPatch
) -> Launch:
    """Parse `argv` with configbus' parser and run the subcommand up to `uvicorn.run`."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"{where}: `configbus {shlex.join(argv)}` is refused: {err.getvalue()}")
    if args.command not in server_defaults():
        pytest.fail(
            f"{where}: `configbus {args.command}` is not a server subcommand "
            f"(those are {sorted(server_defaults())})"
        )
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: calls.append((a, kw)))
    with monkeypatch.context() as m:
        for name in [n for n in os.environ if n.startswith("CONFIGBUS_")]:
            m.delenv(name)
        for name, value in env.items():
            m.setenv(name, value)
        try:
            code = args.func(args)
        except ConfigBusError as exc:
            pytest.fail(f"{where}: `configbus {args.command}` refuses its settings: {exc}")
    assert code == 0 and len(calls) == 1, f"{where}: `configbus {args.command}` did not serve"
    (app, *_), kwargs = calls[0]
    return Launch(args.command, args, app, kwargs["host"], kwargs["port"], kwargs)


def get_routes(app: Any) -> Callable[[str], str | None]:
    """path → name of the endpoint answering GET there (None: 404)."""
    if isinstance(app, Starlette):

        def find(path: str) -> str | None:
            scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
            for route in app.routes:
                match, _ = route.matches(scope)
                if match == Match.FULL:
                    endpoint = getattr(route, "endpoint", None)
                    return getattr(endpoint, "__name__", type(endpoint).__name__)
            return None

        return find

    def ask(path: str) -> str | None:  # a bare ASGI app (mock upstream): ask it
        return None if asgi_get(app, path) == 404 else path

    return ask


def asgi_get(app: Any, path: str) -> int:
    """The status of GET `path` on the ASGI `app` (no lifespan, no server)."""
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    return statuses[0]


def check_path(launch_: Launch, path: str, kind: str, where: str) -> None:
    endpoint = get_routes(launch_.asgi)(path)
    assert endpoint is not None, (
        f"{where}: {path!r} is not a GET route of `configbus {launch_.command}`"
    )
    if kind in ("ready", "live") and isinstance(launch_.asgi, Starlette):
        assert kind in endpoint, (
            f"{where}: {path!r} is served by {endpoint!r}, not a {kind}ness endpoint"
        )


def check_host(launch_: Launch, where: str) -> None:
    try:
        loopback = ipaddress.ip_address(launch_.host).is_loopback
    except ValueError:
        loopback = launch_.host == "localhost"
    assert not loopback, (
        f"{where}: `configbus {launch_.command}` listens on {launch_.host} (loopback): "
        "unreachable from outside the container, pass --host 0.0.0.0"
    )


def fill_placeholder(match: re.Match[str]) -> str:
    text = match.group(0).lower()
    if "keygen" in text:
        return generate_key()
    if "sha256" in text:
        return "ab" * 32
    return "placeholder-value-0123456789"


# --------------------------------------------------------------------------------------
# docker-compose.yml


@functools.cache
def compose() -> dict[str, Any]:
    docs = load_yaml(COMPOSE)
    assert len(docs) == 1 and isinstance(docs[0], dict), f"{rel(COMPOSE)}: one mapping"
    return docs[0]


def compose_value(name: str) -> str:
    """A value for a required ${NAME:?} variable, as an operator would put in .env."""
    if name == "CONFIGBUS_SECRET_KEYS":
        return generate_key()
    if name == "CONFIGBUS_ADMIN_TOKENS":
        return "ops:admin:" + "t" * 32
    pytest.fail(f"{rel(COMPOSE)}: required variable ${{{name}}}: no test value for it")


def interpolate(value: str, where: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        assert not name.startswith("CONFIGBUS_") or name in all_code_env_vars(), (
            f"{where}: ${{{name}}} is not a variable the code reads"
        )
        if op == "-":
            return arg
        return compose_value(name)

    return COMPOSE_VAR.sub(sub, value)


def compose_services() -> dict[str, dict[str, Any]]:
    return compose().get("services", {})


def is_configbus_compose(svc: dict[str, Any]) -> bool:
    image = str(svc.get("image", ""))
    return "build" in svc or image == "configbus" or image.startswith("configbus:")


def compose_env(name: str, svc: dict[str, Any]) -> dict[str, str]:
    raw = svc.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    where = f"{rel(COMPOSE)}: services.{name}.environment"
    return {k: interpolate(str(v), f"{where}.{k}") for k, v in raw.items()}


def compose_argv(name: str, svc: dict[str, Any]) -> list[str]:
    cmd = svc.get("command", [])
    argv = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
    if "entrypoint" in svc:
        ep = svc["entrypoint"]
        ep = shlex.split(ep) if isinstance(ep, str) else list(ep)
        assert ep[:1] == [entry_script()], (
            f"{rel(COMPOSE)}: services.{name}.entrypoint must start with {entry_script()!r}"
        )
        argv = ep[1:] + argv
    return argv


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(number) * units[unit]
    return total


CONFIGBUS_COMPOSE = collect(
    lambda: [n for n, s in compose_services().items() if is_configbus_compose(s)]
)


def test_compose_has_the_fleet() -> None:
    commands = set()
    for name in CONFIGBUS_COMPOSE:
        commands.add(compose_argv(name, compose_services()[name])[:1][0])
    assert commands == set(server_defaults()) - {"up"}, (
        f"{rel(COMPOSE)}: services run {sorted(commands)}, the CLI serves "
        f"{sorted(server_defaults())}"
    )
    redis = [n for n, s in compose_services().items() if "redis" in str(s.get("image", ""))]
    assert redis, f"{rel(COMPOSE)}: no Redis service"
    for name in redis:
        cmd = [str(c) for c in compose_services()[name].get("command", [])]
        where = f"{rel(COMPOSE)}: services.{name}.command"
        assert "--appendonly" in cmd and cmd[cmd.index("--appendonly") + 1] == "yes", (
            f"{where}: Redis must run with --appendonly yes (AOF persistence)"
        )
        vols = compose_services()[name].get("volumes", [])
        assert any(str(v).split(":")[1:2] == ["/data"] for v in vols), (
            f"{rel(COMPOSE)}: services.{name}.volumes: no volume on /data (AOF would be lost)"
        )


@pytest.mark.parametrize("name", CONFIGBUS_COMPOSE)
def test_compose_service_matches_code(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = compose_services()[name]
    where = f"{rel(COMPOSE)}: services.{name}"
    env = compose_env(name, svc)
    argv = compose_argv(name, svc)
    assert argv, f"{where}.command: empty (the image would print --help and exit)"
    run = launch(argv, env, f"{where}.command", monkeypatch)
    check_env_names(run.command, list(env), f"{where}.environment")
    check_host(run, f"{where}.command")

    ports = [str(p) for p in svc.get("ports", [])] + [str(p) for p in svc.get("expose", [])]
    assert ports, f"{where}.ports: the service publishes no port"
    for spec in ports:
        target = spec.split("/")[0].rsplit(":", 1)[-1]
        assert target == str(run.port), (
            f"{where}.ports {spec!r}: container port {target}, `configbus {run.command}` "
            f"listens on {run.port}"
        )
        host = spec.split("/")[0].rsplit(":", 1)[0] if ":" in spec else ""
        if name == "proxy" or run.command == "proxy":
            assert "-" in host or not re.search(r"\d", host.split(":")[-1]), (
                f"{where}.ports {spec!r}: a fixed host port breaks `--scale proxy=N`; "
                "use a range or none"
            )

    health = svc.get("healthcheck", {}).get("test")
    assert health, f"{where}.healthcheck.test: missing"
    text = health if isinstance(health, str) else " ".join(map(str, health))
    urls = re.findall(r"https?://[^\s'\"]+", text)
    assert urls, f"{where}.healthcheck.test: no URL in {text!r}"
    for url in urls:
        parts = urlsplit(url)
        assert parts.port == run.port, f"{where}.healthcheck.test: {url} is not on port {run.port}"
        kind = "ready" if "ready" in parts.path else "live" if "live" in parts.path else ""
        check_path(run, parts.path, kind, f"{where}.healthcheck.test")
    if run.command == "proxy":
        assert "ready" in text, f"{where}.healthcheck.test: the proxy should check readiness"

    drain = run.kwargs.get("timeout_graceful_shutdown")
    if drain is not None:
        grace = duration_s(str(svc.get("stop_grace_period", "10s")))
        assert grace > drain, (
            f"{where}.stop_grace_period: {grace} s, but `configbus {run.command}` drains "
            f"requests for up to {drain} s after SIGTERM"
        )
    if run.command == "proxy" and run.args.snapshot_path is None:
        snap = env.get("CONFIGBUS_SNAPSHOT_PATH")
        assert snap, f"{where}.environment: no CONFIGBUS_SNAPSHOT_PATH (last-known-good file)"
        mounts = [str(v).split(":")[1] for v in svc.get("volumes", []) if ":" in str(v)]
        assert any(PurePosixPath(snap).is_relative_to(m) for m in mounts), (
            f"{where}.environment.CONFIGBUS_SNAPSHOT_PATH: {snap} is on no volume"
        )


# --------------------------------------------------------------------------------------
# k8s/


@dataclass
class Obj:
    file: Path
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind"))

    @property
    def name(self) -> str:
        return str(self.body.get("metadata", {}).get("name"))

    def __str__(self) -> str:
        return f"{rel(self.file)}: {self.kind}/{self.name}"


@functools.cache
def k8s_objects() -> tuple[Obj, ...]:
    out = []
    for path in sorted(K8S.glob("*.y*ml")):
        for doc in load_yaml(path):
            if doc is not None:
                assert isinstance(doc, dict), f"{rel(path)}: a document is not a mapping"
                out.append(Obj(path, doc))
    return tuple(out)


def objects(kind: str) -> list[Obj]:
    return [o for o in k8s_objects() if o.kind == kind]


def kustomization() -> Obj:
    found = objects("Kustomization")
    assert len(found) == 1 and found[0].file.name == "kustomization.yaml", (
        f"{rel(K8S)}: expected one Kustomization in kustomization.yaml"
    )
    return found[0]


WORKLOADS = ("Deployment", "StatefulSet")


@dataclass
class Container:
    obj: Obj
    pod: dict[str, Any]
    body: dict[str, Any]
    where: str = field(init=False)

    def __post_init__(self) -> None:
        self.where = f"{self.obj} container {self.body.get('name')!r}"

    @property
    def is_configbus(self) -> bool:
        image = str(self.body.get("image", ""))
        return image == "configbus" or image.startswith("configbus:")

    def port_number(self, port: int | str) -> int | None:
        if isinstance(port, int):
            return port
        for p in self.body.get("ports", []):
            if p.get("name") == port:
                return int(p["containerPort"])
        return None


def containers() -> list[Container]:
    out = []
    for obj in k8s_objects():
        if obj.kind in WORKLOADS:
            pod = obj.body["spec"]["template"]["spec"]
            out.extend(Container(obj, pod, c) for c in pod.get("containers", []))
    return out


def secret_values() -> dict[tuple[str, str], str]:
    out = {}
    for s in objects("Secret"):
        for key, value in (s.body.get("stringData") or {}).items():
            out[(s.name, key)] = str(value)
        for key in s.body.get("data") or {}:
            out.setdefault((s.name, key), "")
    return out


def k8s_env(c: Container, *, fill: bool = True) -> dict[str, str]:
    env: dict[str, str] = {}
    secrets = secret_values()
    for item in c.body.get("env", []):
        name = item["name"]
        where = f"{c.where} env {name}"
        if "value" in item:
            value = str(item["value"])
        else:
            ref = item.get("valueFrom", {})
            if "secretKeyRef" in ref:
                key = (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
                assert key in secrets, f"{where}: Secret {key[0]} has no key {key[1]!r}"
                value = secrets[key]
            elif "fieldRef" in ref:
                value = f"pod-{ref['fieldRef']['fieldPath'].replace('.', '-')}"
            else:
                pytest.fail(f"{where}: unsupported valueFrom {sorted(ref)}")
        for dep in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
            assert dep in env, f"{where}: $({dep}) is not defined before it"
            value = value.replace(f"$({dep})", env[dep])
        env[name] = PLACEHOLDER.sub(fill_placeholder, value) if fill else value
    assert "envFrom" not in c.body or not c.is_configbus, (
        f"{c.where} envFrom: name each variable in env, so this test can check it"
    )
    return env


def k8s_argv(c: Container) -> list[str]:
    if "command" in c.body:
        cmd = [str(x) for x in c.body["command"]]
        assert cmd[:1] == [entry_script()], (
            f"{c.where} command: must start with {entry_script()!r} (or be left out)"
        )
        return cmd[1:] + [str(x) for x in c.body.get("args", [])]
    return [str(x) for x in c.body.get("args", [])]


CONFIGBUS_K8S = collect(lambda: [c for c in containers() if c.is_configbus])


def test_every_manifest_env_var_is_read_by_the_code() -> None:
    """Every CONFIGBUS_* name in docker-compose.yml and k8s/ (environment entries,
    ${...} interpolations and comments) appears in the sources of configbus, proxy or admin."""
    known = all_code_env_vars()
    for path in (COMPOSE, *sorted(K8S.glob("*.y*ml"))):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for var in ENV_NAME.findall(line):  # comments too: operators read them
                assert var in known, (
                    f"{rel(path)}:{n}: {var} is not read anywhere in {', '.join(packages())}"
                )


def test_yaml_files_parse() -> None:
    assert compose()
    assert k8s_objects()
    for obj in k8s_objects():
        assert obj.body.get("apiVersion") and obj.body.get("kind"), (
            f"{obj}: apiVersion and kind are required"
        )
        if obj.kind != "Kustomization":
            assert obj.name != "None", f"{obj}: metadata.name is required"


def test_kustomization_lists_every_manifest() -> None:
    k = kustomization()
    listed = [str(r) for r in k.body.get("resources", [])]
    files = sorted(p.name for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")
    assert sorted(listed) == files, f"{k} resources: {sorted(listed)}, files in {rel(K8S)}: {files}"
    ns = k.body.get("namespace")
    assert [o.name for o in objects("Namespace")] == [ns], (
        f"{k} namespace: {ns!r} is not the Namespace defined in {rel(K8S)}"
    )
    for obj in k8s_objects():
        own = obj.body.get("metadata", {}).get("namespace")
        assert own in (None, ns), f"{obj} metadata.namespace: {own!r}, kustomization says {ns!r}"
    images = {i["name"] for i in k.body.get("images", [])}
    for c in CONFIGBUS_K8S:
        assert c.body["image"].split(":")[0] in images, (
            f"{c.where} image: {c.body['image']!r} is not in {k} images"
        )


def test_k8s_runs_the_fleet() -> None:
    commands = {k8s_argv(c)[0] for c in CONFIGBUS_K8S}
    assert {"proxy", "admin"} <= commands, (
        f"{rel(K8S)}: containers run {sorted(commands)}; proxy and admin are needed"
    )
    kinds = {o.kind for o in k8s_objects()}
    for kind in ("Namespace", "Secret", "StatefulSet", "Deployment", "Service"):
        assert kind in kinds, f"{rel(K8S)}: no {kind}"
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert kind in kinds, f"{rel(K8S)}: no {kind} (for the proxies)"


@pytest.mark.parametrize("c", CONFIGBUS_K8S, ids=lambda c: c.where)
def test_k8s_container_matches_code(c: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    env = k8s_env(c)
    run = launch(k8s_argv(c), env, f"{c.where} args", monkeypatch)
    check_env_names(run.command, list(env), f"{c.where} env")
    check_host(run, f"{c.where} args")

    declared = [int(p["containerPort"]) for p in c.body.get("ports", [])]
    assert declared == [run.port], (
        f"{c.where} ports: containerPort {declared}, `configbus {run.command}` listens on "
        f"{run.port}"
    )
    for kind, probe_name in (("ready", "readinessProbe"), ("live", "livenessProbe")):
        probe = c.body.get(probe_name)
        assert probe and "httpGet" in probe, f"{c.where} {probe_name}: missing httpGet probe"
        get = probe["httpGet"]
        port = c.port_number(get.get("port"))
        assert port == run.port, (
            f"{c.where} {probe_name}.httpGet.port: {get.get('port')!r} is not the port "
            f"`configbus {run.command}` listens on ({run.port})"
        )
        check_path(run, get.get("path", "/"), kind, f"{c.where} {probe_name}.httpGet.path")

    annotations = c.obj.body["spec"]["template"].get("metadata", {}).get("annotations", {})
    if "prometheus.io/port" in annotations:
        where = f"{c.obj} spec.template.metadata.annotations"
        assert int(annotations["prometheus.io/port"]) == run.port, (
            f"{where}.prometheus.io/port: not the port `configbus {run.command}` listens on "
            f"({run.port})"
        )
        check_path(run, annotations.get("prometheus.io/path", "/metrics"), "", where)

    # Settings the process builds (snapshot path from env or flag).
    snap = run.args.snapshot_path if run.command == "proxy" else None
    snap = snap or (env.get("CONFIGBUS_SNAPSHOT_PATH") if run.command == "proxy" else None)
    if run.command == "proxy":
        assert snap, f"{c.where} env: no CONFIGBUS_SNAPSHOT_PATH (last-known-good file)"
        volumes = {v["name"]: v for v in c.pod.get("volumes", [])}
        mounts = [
            m
            for m in c.body.get("volumeMounts", [])
            if PurePosixPath(str(snap)).is_relative_to(m["mountPath"])
        ]
        assert mounts, f"{c.where} env CONFIGBUS_SNAPSHOT_PATH: {snap} is on no volumeMount"
        vol = volumes.get(mounts[-1]["name"], {})
        assert "emptyDir" in vol, (
            f"{c.where} volumeMounts {mounts[-1]['name']}: the snapshot volume should be an "
            "emptyDir (kept across container restarts)"
        )

    # Graceful shutdown: preStop sleep, then SIGTERM, then uvicorn's drain.
    stop = c.body.get("lifecycle", {}).get("preStop", {})
    cmd = stop.get("exec", {}).get("command", [])
    sleep = float(stop["sleep"]["seconds"]) if "sleep" in stop else None
    if cmd[:1] == ["sleep"]:
        sleep = float(cmd[1])
    assert sleep and sleep > 0, f"{c.where} lifecycle.preStop: no sleep before SIGTERM"
    grace = float(c.pod.get("terminationGracePeriodSeconds", 30))
    drain = run.kwargs.get("timeout_graceful_shutdown")
    if drain is not None:
        assert grace > sleep + drain, (
            f"{c.obj} terminationGracePeriodSeconds: {grace} s <= preStop {sleep} s + "
            f"uvicorn's drain {drain} s"
        )
    if run.command == "proxy":
        longest = longest_default_request_s()
        assert grace > sleep + longest, (
            f"{c.obj} terminationGracePeriodSeconds: {grace} s <= preStop {sleep} s + the "
            f"default upstream timeout {longest} s"
        )


@pytest.mark.parametrize("c", CONFIGBUS_K8S, ids=lambda c: c.where)
def test_k8s_placeholders_are_refused(c: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deployed with the committed placeholder Secret, the service refuses to start."""
    env = k8s_env(c, fill=False)
    if not any(PLACEHOLDER.search(v) for v in env.values()):
        return
    argv = k8s_argv(c)
    args = build_parser().parse_args(argv)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    for name in env:
        monkeypatch.setenv(name, env[name])
    if args.command == "proxy":
        # The proxy checks its keys when the app starts (lifespan), not when it is built.
        from configbus.crypto import SecretBox

        with pytest.raises(ConfigBusError):
            SecretBox.from_string(env.get("CONFIGBUS_SECRET_KEYS", ""))
        return
    with pytest.raises(ConfigBusError):
        args.func(args)


def test_k8s_redis_url_matches_redis_password() -> None:
    values = secret_values()
    for (secret, key), url in values.items():
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.password:
            continue
        pw = [v for (s, k), v in values.items() if s == secret and "redis" in k and k != key]
        if pw:
            assert parts.password in pw, (
                f"{rel(K8S)}: Secret/{secret} {key}: the URL's password is not the one in "
                f"the Secret's other redis key"
            )


def test_k8s_references_resolve() -> None:
    pods = {o.name: (o, o.body["spec"]["template"]) for o in k8s_objects() if o.kind in WORKLOADS}
    for obj, template in pods.values():
        labels = template.get("metadata", {}).get("labels", {})
        sel = obj.body["spec"]["selector"]["matchLabels"]
        assert sel.items() <= labels.items(), (
            f"{obj} spec.selector: {sel} does not match the template labels {labels}"
        )
        spec = template["spec"]
        volumes = {v["name"] for v in spec.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in obj.body["spec"].get("volumeClaimTemplates", [])}
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, (
                    f"{obj} container {c['name']!r} volumeMounts {m['name']}: no such volume"
                )
        if obj.kind == "StatefulSet":
            svc = [s for s in objects("Service") if s.name == obj.body["spec"]["serviceName"]]
            assert svc and svc[0].body["spec"].get("clusterIP") == "None", (
                f"{obj} spec.serviceName: needs a headless Service of that name"
            )
            assert obj.body["spec"].get("volumeClaimTemplates"), (
                f"{obj} spec.volumeClaimTemplates: Redis data needs a persistent volume"
            )

    def selected(sel: dict[str, str]) -> list[tuple[Obj, dict[str, Any]]]:
        return [
            (o, t)
            for o, t in pods.values()
            if sel.items() <= t.get("metadata", {}).get("labels", {}).items()
        ]

    for svc in objects("Service"):
        targets = selected(svc.body["spec"]["selector"])
        assert targets, f"{svc} spec.selector: selects no pod"
        for port in svc.body["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for obj, t in targets:
                found = [
                    p
                    for c in t["spec"]["containers"]
                    for p in c.get("ports", [])
                    if target in (p.get("name"), p["containerPort"])
                ]
                assert found, f"{svc} spec.ports.targetPort: {target!r} is no port of {obj}"

    for pdb in objects("PodDisruptionBudget"):
        assert selected(pdb.body["spec"]["selector"]["matchLabels"]), (
            f"{pdb} spec.selector: selects no pod"
        )
    for hpa in objects("HorizontalPodAutoscaler"):
        ref = hpa.body["spec"]["scaleTargetRef"]
        assert ref["name"] in pods and pods[ref["name"]][0].kind == ref["kind"], (
            f"{hpa} spec.scaleTargetRef: no {ref['kind']}/{ref['name']}"
        )
        target_obj, template = pods[ref["name"]]
        assert "replicas" not in target_obj.body["spec"], (
            f"{target_obj} spec.replicas: set while {hpa} owns it (each apply would reset it)"
        )
        for metric in hpa.body["spec"].get("metrics", []):
            resource = metric.get("resource", {}).get("name")
            if resource:
                for c in template["spec"]["containers"]:
                    assert resource in c.get("resources", {}).get("requests", {}), (
                        f"{target_obj} container {c['name']!r} resources.requests.{resource}: "
                        f"needed by {hpa}"
                    )


def test_k8s_pods_run_as_the_image_user() -> None:
    uid = dockerfile_user()
    for c in CONFIGBUS_K8S:
        sc = {**c.pod.get("securityContext", {}), **c.body.get("securityContext", {})}
        assert sc.get("runAsNonRoot") is True, f"{c.where} securityContext.runAsNonRoot: not set"
        if "runAsUser" in sc:
            assert str(sc["runAsUser"]) == uid, (
                f"{c.where} securityContext.runAsUser: {sc['runAsUser']}, the image's USER is {uid}"
            )


def test_k8s_schemas() -> None:
    kv = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install kubernetes-validate): "
        "offline Kubernetes schema validation skipped",
    )
    errors = []
    for obj in k8s_objects():
        if obj.kind == "Kustomization":
            continue
        try:
            kv.validate(json.loads(json.dumps(obj.body)), K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{obj} {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            errors.append(f"{obj}: {exc}")
    assert not errors, "\n".join(errors)


# --------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


@functools.cache
def dockerfile() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instr, _, rest = line.partition(" ")
            out.append((instr.upper(), rest.strip()))
    return out


def dockerfile_user() -> str:
    users = [rest for instr, rest in dockerfile() if instr == "USER"]
    assert users, f"{rel(DOCKERFILE)}: no USER (the image would run as root)"
    return users[-1].split(":")[0]


def stages() -> Iterator[list[tuple[str, str]]]:
    current: list[tuple[str, str]] = []
    for item in dockerfile():
        if item[0] == "FROM" and current:
            yield current
            current = []
        current.append(item)
    yield current


def test_dockerfile() -> None:
    where = rel(DOCKERFILE)
    final = list(stages())[-1]
    base = final[0][1].split()[0]
    m = re.fullmatch(r"python:(\d+\.\d+)(?:\.\d+)?-slim(?:-\w+)?", base)
    assert m, f"{where}: final FROM {base!r} is not a python:X.Y-slim image"
    requires = SpecifierSet(pyproject()["project"]["requires-python"])
    assert requires.contains(m.group(1) + ".0"), (
        f"{where}: FROM {base}: Python {m.group(1)} does not satisfy requires-python {requires}"
    )

    entry = [rest for instr, rest in final if instr == "ENTRYPOINT"]
    assert entry, f"{where}: no ENTRYPOINT"
    try:
        form = json.loads(entry[-1])
    except json.JSONDecodeError:
        form = entry[-1]
    assert form == [entry_script()], (
        f"{where}: ENTRYPOINT {entry[-1]} should be the exec form [{entry_script()!r}] "
        "(PID 1 gets SIGTERM and drains)"
    )
    user = dockerfile_user()
    assert user not in ("root", "0"), f"{where}: USER {user} is root"

    copied = " ".join(rest for instr, rest in dockerfile() if instr in ("COPY", "ADD"))
    for needed in (*packages(), PYPROJECT.name):
        assert re.search(rf"(^|\s|/){re.escape(needed)}(\s|/|$)", copied), (
            f"{where}: {needed} is never copied into the image"
        )
    installs = " ".join(rest for instr, rest in dockerfile() if instr == "RUN")
    assert re.search(r"pip install .*\.(\s|$)", installs), f"{where}: no `pip install .`"

    exposed = {int(p) for instr, rest in final if instr == "EXPOSE" for p in rest.split()}
    wanted = {port for cmd, port in server_defaults().items() if cmd != "up"}
    assert exposed == wanted, (
        f"{where}: EXPOSE {sorted(exposed)}, the CLI's default ports are {sorted(wanted)}"
    )


def test_dockerignore() -> None:
    patterns = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (".git", ".venv", ".env"):
        assert needed in patterns, f"{rel(DOCKERIGNORE)}: {needed} is not ignored"
    for kept in (*packages(), PYPROJECT.name):
        assert kept not in patterns, f"{rel(DOCKERIGNORE)}: {kept} is needed by the build"
