"""The Grafana dashboard and the Prometheus alert rules name only metrics that a running
fleet (`configbus admin`, `configbus proxy` and an upstream, as real processes) exposes;
the rules load in `promtool` when it is installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.admin.helpers import SECRET_KEY, TOKENS_ENV, auth
from tests.proxy.helpers import AUTH, CHAT, Mock, data_for, running
from tests.support import ROOT, RedisServer, Service, configbus_cmd, free_port, wait_for

OBS = ROOT / "observability"
DASHBOARD = OBS / "grafana" / "dashboards" / "configbus.json"
RULES = OBS / "alerts.yml"
METRIC = re.compile(r"\b(configbus_[a-z0-9_]+)")
SUFFIXES = ("", "_total", "_count", "_sum", "_bucket", "_created")


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def rule_exprs() -> list[str]:
    doc = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in doc["groups"] for r in g["rules"]]


def exposed(text: str) -> set[str]:
    """Every series name a scrape offers, families without samples yet included."""
    names: set[str] = set()
    for fam in text_string_to_metric_families(text):
        names |= {fam.name + s for s in SUFFIXES}
        names |= {s.name for s in fam.samples}
    return names


def test_rules_name_the_alerts_the_issue_asks_for() -> None:
    exprs = " ".join(rule_exprs())
    for metric in (
        "configbus_rejects_total",
        "configbus_stale",
        "configbus_head_version",
        'configbus_admin_rollouts_total{event="aborted"}',
        "configbus_proxy_breaker_state",
        "configbus_proxy_rate_limit_local",
    ):
        assert metric in exprs, metric


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_rules_load_in_promtool() -> None:
    run = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_metric_the_dashboard_and_rules_use_is_scraped_from_a_running_fleet(
    redis_server: RedisServer,
) -> None:
    ns = "dashboards"
    env = {
        "CONFIGBUS_REDIS_URL": redis_server.url,
        "CONFIGBUS_ADMIN_TOKENS": TOKENS_ENV,
        "CONFIGBUS_SECRET_KEYS": SECRET_KEY,
        "CONFIGBUS_NAMESPACE": ns,
        "CONFIGBUS_HEARTBEAT_INTERVAL_S": "1",
        "UPSTREAM_B_KEY": "sk-upstream-b",
    }
    admin_port, proxy_port = free_port(), free_port()
    admin_url, proxy_url = f"http://127.0.0.1:{admin_port}", f"http://127.0.0.1:{proxy_port}"
    admin = Service(
        configbus_cmd("admin", "--port", str(admin_port), "--log-level", "warning"),
        env=env,
        name="dash-admin",
    )
    proxy = Service(configbus_cmd("proxy", "--port", str(proxy_port)), env=env, name="dash-proxy")
    a, b = Mock("dash-a"), Mock("dash-b")
    scraped: set[str] = set()
    with running(a, b), httpx.Client(timeout=10) as c:
        try:
            admin.start()
            proxy.start()
            admin.wait_http(admin_url + "/health/live")
            proxy.wait_http(proxy_url + "/health/live")
            r = c.put(
                f"{admin_url}/v1/namespaces/{ns}/config",
                headers=auth("publisher"),
                json={"document": data_for(a, b)},
            )
            assert r.status_code in (200, 201), r.text

            def served() -> Any:
                return c.post(proxy_url + "/v1/chat/completions", json=CHAT, headers=AUTH)

            wait_for(lambda: served().status_code == 200, timeout=15, what="proxy serves")
            for url in (admin_url, proxy_url):
                scraped |= exposed(c.get(url + "/metrics").text)
        finally:
            proxy.stop()
            admin.stop()
    used = {m for e in dashboard_exprs() + rule_exprs() for m in METRIC.findall(e)}
    assert used, "no metric found in the dashboard or the rules"
    missing = sorted(used - scraped)
    assert not missing, f"named by {DASHBOARD.name} or {RULES.name} but not exposed: {missing}"


def test_the_dashboard_is_provisioned_from_the_files_compose_mounts() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name].get("profiles") == ["observability"], name
        for vol in services[name]["volumes"]:
            src = vol.split(":")[0]
            assert (ROOT / src).exists(), f"services.{name}.volumes: {src} does not exist"
    prom = yaml.safe_load((OBS / "prometheus.yml").read_text())
    targets = {
        t
        for job in prom["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    }
    dns = {
        (n, sd["port"])
        for job in prom["scrape_configs"]
        for sd in job.get("dns_sd_configs", [])
        for n in sd["names"]
    }
    # The admin and the proxy, on the ports their compose commands listen on.
    assert "admin:8700" in targets and ("proxy", 8000) in dns
    assert "--port" in services["admin"]["command"] and "8700" in services["admin"]["command"]
    assert "8000" in services["proxy"]["command"]
    assert Path(prom["rule_files"][0]).name == RULES.name
    json.loads(DASHBOARD.read_text())
