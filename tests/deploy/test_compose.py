"""docker-compose.yml agrees with the code: each configbus service runs through the real CLI,
its environment is checked against the settings registry, and its ports, healthchecks,
volumes and stop grace period match what the process does."""

from __future__ import annotations

import functools
import re
import shlex
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest

from configbus import variables
from configbus.crypto import generate_key
from tests.deploy.support import (
    ROOT,
    check_env,
    check_path,
    collect,
    entry_script,
    launch,
    load_yaml,
    rel,
    server_defaults,
)

COMPOSE = ROOT / "docker-compose.yml"
WHERE = rel(COMPOSE)
COMPOSE_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?([-?])([^}]*))?\}")
# What an operator puts in .env for the ${NAME:?} variables.
DOT_ENV = {
    variables.SECRET_KEYS.name: generate_key(),
    variables.ADMIN_TOKENS.name: "ops:admin:" + "t" * 32,
}


@functools.cache
def services() -> dict[str, dict[str, Any]]:
    docs = load_yaml(COMPOSE)
    assert len(docs) == 1 and isinstance(docs[0], dict), f"{WHERE}: one mapping"
    return dict(docs[0].get("services", {}))


def is_configbus(svc: dict[str, Any]) -> bool:
    image = str(svc.get("image", ""))
    return "build" in svc or image == "configbus" or image.startswith("configbus:")


def interpolate(value: str, where: str) -> str:
    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        if op == "-":
            return str(arg)
        assert name in DOT_ENV, f"{where}: ${{{name}}}: no test value for it (DOT_ENV)"
        return DOT_ENV[name]

    return COMPOSE_VAR.sub(sub, value)


def environment(name: str) -> dict[str, str]:
    raw = services()[name].get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    where = f"{WHERE}: services.{name}.environment"
    return {k: interpolate(str(v), f"{where}.{k}") for k, v in raw.items()}


def argv(name: str) -> list[str]:
    svc = services()[name]
    cmd = svc.get("command", [])
    out = shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]
    if "entrypoint" in svc:
        ep = svc["entrypoint"]
        ep = shlex.split(ep) if isinstance(ep, str) else list(ep)
        assert ep[:1] == [entry_script()], (
            f"{WHERE}: services.{name}.entrypoint must start with {entry_script()!r}"
        )
        out = ep[1:] + out
    return out


def duration_s(text: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text))


CONFIGBUS = collect(lambda: [n for n, s in services().items() if is_configbus(s)])


def test_compose_runs_the_fleet_and_a_persistent_redis() -> None:
    commands = {argv(name)[0] for name in CONFIGBUS if argv(name)}
    assert commands == set(server_defaults()) - {"up"}, (
        f"{WHERE}: services run {sorted(commands)}, the CLI serves {sorted(server_defaults())}"
    )
    redis = [n for n, s in services().items() if "redis" in str(s.get("image", ""))]
    assert redis, f"{WHERE}: no Redis service"
    for name in redis:
        cmd = [str(c) for c in services()[name].get("command", [])]
        assert "--appendonly" in cmd and cmd[cmd.index("--appendonly") + 1] == "yes", (
            f"{WHERE}: services.{name}.command: Redis must run with --appendonly yes"
        )
        vols = services()[name].get("volumes", [])
        assert any(str(v).split(":")[1:2] == ["/data"] for v in vols), (
            f"{WHERE}: services.{name}.volumes: no volume on /data (AOF would be lost)"
        )


@pytest.mark.parametrize("name", CONFIGBUS)
def test_compose_service_matches_code(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    svc, where, env = services()[name], f"{WHERE}: services.{name}", environment(name)
    assert argv(name), f"{where}.command: empty (the image would print --help and exit)"
    run = launch(argv(name), env, f"{where}.command", monkeypatch)
    check_env(run.command, env, f"{where}.environment")

    ports = [str(p) for p in (*svc.get("ports", []), *svc.get("expose", []))]
    assert ports, f"{where}.ports: the service publishes no port"
    for spec in ports:
        host, _, target = spec.split("/")[0].rpartition(":")
        assert target == str(run.port), (
            f"{where}.ports {spec!r}: container port {target}, `configbus {run.command}` "
            f"listens on {run.port}"
        )
        if run.command == "proxy":
            assert "-" in host or not re.search(r"\d", host.split(":")[-1]), (
                f"{where}.ports {spec!r}: a fixed host port breaks `--scale proxy=N`"
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
    if run.command == "proxy":
        snap = run.args.snapshot_path or env.get(variables.SNAPSHOT_PATH.name)
        assert snap, f"{where}.environment: no {variables.SNAPSHOT_PATH.name} (last-known-good)"
        mounts = [str(v).split(":")[1] for v in svc.get("volumes", []) if ":" in str(v)]
        assert any(PurePosixPath(snap).is_relative_to(m) for m in mounts), (
            f"{where}.environment.{variables.SNAPSHOT_PATH.name}: {snap} is on no volume"
        )
