"""k8s/ agrees with the code: each configbus container runs through the real CLI, its
environment is checked against the settings registry, and its ports, probes, volumes and
shutdown timing match what the process does; the objects reference each other correctly and
validate against the Kubernetes schemas (offline, kubernetes-validate)."""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate as kv
import pytest

from configbus import variables
from configbus.crypto import generate_key
from configbus.errors import ConfigBusError
from tests.deploy.support import (
    ROOT,
    check_env,
    check_path,
    collect,
    entry_script,
    image_user,
    launch,
    load_yaml,
    parse_args,
    rel,
    run_args,
)

K8S = ROOT / "k8s"
# The Kubernetes version whose schemas the manifests are validated against (oldest still
# widely run; everything used here is GA well before it).
K8S_VERSION = "1.29"
WORKLOADS = ("Deployment", "StatefulSet")
PLACEHOLDER = re.compile(r"REPLACE_WITH_[A-Za-z0-9_]+")


@dataclass(frozen=True)
class Obj:
    file: Path
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind"))

    @property
    def name(self) -> str:
        return str(self.body.get("metadata", {}).get("name"))

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.body.get("spec", {}))

    def __str__(self) -> str:
        return f"{rel(self.file)}: {self.kind}/{self.name}"


@functools.cache
def k8s_objects() -> tuple[Obj, ...]:
    return tuple(
        Obj(path, doc) for path in sorted(K8S.glob("*.y*ml")) for doc in load_yaml(path) if doc
    )


def objects(kind: str) -> list[Obj]:
    return [o for o in k8s_objects() if o.kind == kind]


@dataclass(frozen=True)
class Container:
    obj: Obj
    body: dict[str, Any]

    @property
    def pod(self) -> dict[str, Any]:
        return dict(self.obj.spec["template"]["spec"])

    @property
    def where(self) -> str:
        return f"{self.obj} container {self.body.get('name')!r}"

    def port_number(self, port: int | str) -> int | None:
        if isinstance(port, int):
            return port
        named = {p.get("name"): int(p["containerPort"]) for p in self.body.get("ports", [])}
        return named.get(port)

    def argv(self) -> list[str]:
        cmd = [str(x) for x in self.body.get("command", [])]
        assert cmd[:1] in ([], [entry_script()]), (
            f"{self.where} command: must start with {entry_script()!r} (or be left out)"
        )
        return cmd[1:] + [str(x) for x in self.body.get("args", [])]

    def env(self, *, fill: bool = True) -> dict[str, str]:
        """The container's environment; Secret placeholders filled with valid test values
        unless `fill` is False."""
        assert "envFrom" not in self.body, f"{self.where} envFrom: name each variable in env"
        env: dict[str, str] = {}
        for item in self.body.get("env", []):
            where, ref = f"{self.where} env {item['name']}", item.get("valueFrom", {})
            if "value" in item:
                value = str(item["value"])
            elif "secretKeyRef" in ref:
                key = (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"])
                assert key in secret_values(), f"{where}: Secret {key[0]} has no key {key[1]!r}"
                value = secret_values()[key]
            elif "fieldRef" in ref:
                value = f"pod-{ref['fieldRef']['fieldPath'].replace('.', '-')}"
            else:
                pytest.fail(f"{where}: unsupported valueFrom {sorted(ref)}")
            for dep in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
                assert dep in env, f"{where}: $({dep}) is not defined before it"
                value = value.replace(f"$({dep})", env[dep])
            env[item["name"]] = PLACEHOLDER.sub(filled, value) if fill else value
        return env


def filled(placeholder: re.Match[str]) -> str:
    text = placeholder.group(0).lower()
    if "keygen" in text:
        return generate_key()
    return "ab" * 32 if "sha256" in text else "placeholder-value-0123456789"


def containers() -> list[Container]:
    return [
        Container(o, c)
        for o in k8s_objects()
        if o.kind in WORKLOADS
        for c in o.spec["template"]["spec"].get("containers", [])
    ]


def secret_values() -> dict[tuple[str, str], str]:
    out = {}
    for s in objects("Secret"):
        out.update({(s.name, k): str(v) for k, v in (s.body.get("stringData") or {}).items()})
        out.update({(s.name, k): "" for k in s.body.get("data") or {}})
    return out


CONFIGBUS = collect(
    lambda: [c for c in containers() if str(c.body.get("image", "")).split(":")[0] == "configbus"]
)


def test_kustomization_lists_every_manifest() -> None:
    found = objects("Kustomization")
    assert [o.file.name for o in found] == ["kustomization.yaml"], f"{rel(K8S)}: one Kustomization"
    k = found[0]
    files = sorted(p.name for p in K8S.glob("*.y*ml") if p.name != "kustomization.yaml")
    listed = sorted(str(r) for r in k.body.get("resources", []))
    assert listed == files, f"{k} resources: {listed}, files in {rel(K8S)}: {files}"
    ns = k.body.get("namespace")
    assert [o.name for o in objects("Namespace")] == [ns], f"{k} namespace: {ns!r} undefined"
    for obj in k8s_objects():
        own = obj.body.get("metadata", {}).get("namespace")
        assert own in (None, ns), f"{obj} metadata.namespace: {own!r}, kustomization says {ns!r}"
    images = {i["name"] for i in k.body.get("images", [])}
    for c in CONFIGBUS:
        assert c.body["image"].split(":")[0] in images, f"{c.where} image: not in {k} images"


def test_k8s_runs_the_fleet() -> None:
    commands = {c.argv()[0] for c in CONFIGBUS}
    assert {"proxy", "admin"} <= commands, f"{rel(K8S)}: containers run {sorted(commands)}"
    kinds = {o.kind for o in k8s_objects()}
    for kind in ("Namespace", "Secret", "StatefulSet", "Deployment", "Service"):
        assert kind in kinds, f"{rel(K8S)}: no {kind}"
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        assert kind in kinds, f"{rel(K8S)}: no {kind} (for the proxies)"


@pytest.mark.parametrize("c", CONFIGBUS, ids=lambda c: c.where)
def test_k8s_container_matches_code(c: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    env = c.env()
    run = launch(c.argv(), env, f"{c.where} args", monkeypatch)
    check_env(run.command, env, f"{c.where} env")

    declared = [int(p["containerPort"]) for p in c.body.get("ports", [])]
    assert declared == [run.port], f"{c.where} ports: {declared}, it listens on {run.port}"
    for kind, probe_name in (("ready", "readinessProbe"), ("live", "livenessProbe")):
        get = c.body.get(probe_name, {}).get("httpGet")
        assert get, f"{c.where} {probe_name}: missing httpGet probe"
        assert c.port_number(get.get("port")) == run.port, (
            f"{c.where} {probe_name}.httpGet.port: {get.get('port')!r} is not {run.port}"
        )
        check_path(run, get.get("path", "/"), kind, f"{c.where} {probe_name}.httpGet.path")

    annotations = c.obj.spec["template"].get("metadata", {}).get("annotations", {})
    if "prometheus.io/port" in annotations:
        where = f"{c.obj} spec.template.metadata.annotations"
        assert int(annotations["prometheus.io/port"]) == run.port, (
            f"{where}.prometheus.io/port: not {run.port}"
        )
        check_path(run, annotations.get("prometheus.io/path", "/metrics"), "", where)

    if run.command == "proxy":
        snap = run.args.snapshot_path or env.get(variables.SNAPSHOT_PATH.name)
        assert snap, f"{c.where} env: no {variables.SNAPSHOT_PATH.name} (last-known-good file)"
        volumes = {v["name"]: v for v in c.pod.get("volumes", [])}
        mounts = [
            m["name"]
            for m in c.body.get("volumeMounts", [])
            if PurePosixPath(str(snap)).is_relative_to(m["mountPath"])
        ]
        assert mounts, f"{c.where} env {variables.SNAPSHOT_PATH.name}: {snap} is on no volume"
        assert "emptyDir" in volumes.get(mounts[-1], {}), (
            f"{c.where} volumeMounts {mounts[-1]}: should be an emptyDir (kept across restarts)"
        )

    # Graceful shutdown: preStop sleep, then SIGTERM, then uvicorn's drain.
    stop = c.body.get("lifecycle", {}).get("preStop", {})
    cmd = stop.get("exec", {}).get("command", [])
    sleep = (
        float(cmd[1]) if cmd[:1] == ["sleep"] else float(stop.get("sleep", {}).get("seconds", 0))
    )
    assert sleep > 0, f"{c.where} lifecycle.preStop: no sleep before SIGTERM"
    grace = float(c.pod.get("terminationGracePeriodSeconds", 30))
    drain = run.kwargs.get("timeout_graceful_shutdown") or 0
    assert grace > sleep + drain, (
        f"{c.obj} terminationGracePeriodSeconds: {grace} s <= preStop {sleep} s + "
        f"uvicorn's drain {drain} s"
    )


@pytest.mark.parametrize("c", CONFIGBUS, ids=lambda c: c.where)
def test_k8s_placeholders_are_refused(c: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deployed with the committed placeholder Secret, the service refuses to start."""
    env = c.env(fill=False)
    if any(PLACEHOLDER.search(v) for v in env.values()):
        with pytest.raises(ConfigBusError):
            run_args(parse_args(c.argv(), c.where), env, monkeypatch)


def test_k8s_redis_url_matches_redis_password() -> None:
    values = secret_values()
    for (secret, key), url in values.items():
        parts = urlsplit(url)
        if parts.scheme in ("redis", "rediss") and parts.password:
            pw = [v for (s, k), v in values.items() if s == secret and "redis" in k and k != key]
            assert not pw or parts.password in pw, (
                f"{rel(K8S)}: Secret/{secret} {key}: the URL's password is not the Secret's"
            )


def test_k8s_references_resolve() -> None:
    pods = {o.name: o for o in k8s_objects() if o.kind in WORKLOADS}

    def labels(o: Obj) -> dict[str, str]:
        return dict(o.spec["template"].get("metadata", {}).get("labels", {}))

    def selected(sel: dict[str, str]) -> list[Obj]:
        return [o for o in pods.values() if sel.items() <= labels(o).items()]

    for obj in pods.values():
        sel = obj.spec["selector"]["matchLabels"]
        assert sel.items() <= labels(obj).items(), f"{obj} spec.selector: {sel} misses its pods"
        pod = obj.spec["template"]["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in obj.spec.get("volumeClaimTemplates", [])}
        for c in pod["containers"]:
            for m in c.get("volumeMounts", []):
                assert m["name"] in volumes, f"{obj} {c['name']} volumeMounts {m['name']}: none"
        if obj.kind == "StatefulSet":
            svc = [s for s in objects("Service") if s.name == obj.spec["serviceName"]]
            assert svc and svc[0].spec.get("clusterIP") == "None", (
                f"{obj} spec.serviceName: needs a headless Service of that name"
            )
            assert obj.spec.get("volumeClaimTemplates"), f"{obj}: Redis needs a persistent volume"

    for svc in objects("Service"):
        targets = selected(svc.spec["selector"])
        assert targets, f"{svc} spec.selector: selects no pod"
        for port in svc.spec["ports"]:
            target = port.get("targetPort", port["port"])
            for obj in targets:
                found = [
                    p
                    for c in obj.spec["template"]["spec"]["containers"]
                    for p in c.get("ports", [])
                    if target in (p.get("name"), p["containerPort"])
                ]
                assert found, f"{svc} spec.ports.targetPort: {target!r} is no port of {obj}"

    for pdb in objects("PodDisruptionBudget"):
        assert selected(pdb.spec["selector"]["matchLabels"]), f"{pdb} selects no pod"
    for hpa in objects("HorizontalPodAutoscaler"):
        ref = hpa.spec["scaleTargetRef"]
        target = pods.get(ref["name"])
        assert target and target.kind == ref["kind"], f"{hpa} scaleTargetRef: no such workload"
        assert "replicas" not in target.spec, f"{target} spec.replicas: set while {hpa} owns it"
        for metric in hpa.spec.get("metrics", []):
            resource = metric.get("resource", {}).get("name")
            for c in target.spec["template"]["spec"]["containers"] if resource else []:
                assert resource in c.get("resources", {}).get("requests", {}), (
                    f"{target} container {c['name']!r} resources.requests.{resource}: "
                    f"needed by {hpa}"
                )


def test_k8s_pods_run_as_the_image_user() -> None:
    for c in CONFIGBUS:
        sc = {**c.pod.get("securityContext", {}), **c.body.get("securityContext", {})}
        assert sc.get("runAsNonRoot") is True, f"{c.where} securityContext.runAsNonRoot: not set"
        assert str(sc.get("runAsUser", image_user())) == image_user(), (
            f"{c.where} securityContext.runAsUser: {sc['runAsUser']}, the image's is {image_user()}"
        )


def test_k8s_schemas() -> None:
    errors = []
    for obj in k8s_objects():
        if obj.kind == "Kustomization":
            continue
        try:
            kv.validate(json.loads(json.dumps(obj.body)), K8S_VERSION, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{obj} {'.'.join(map(str, exc.path))}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            errors.append(f"{obj}: {exc}")
    assert not errors, "\n".join(errors)
