from __future__ import annotations

import pytest

from configbus.errors import SettingsError
from configbus.settings import BusSettings


def test_bad_key_in_settings_is_refused_before_anything_starts() -> None:
    with pytest.raises(SettingsError, match="CONFIGBUS_SECRET_KEYS: key #1 is not a valid"):
        BusSettings.from_env({"CONFIGBUS_SECRET_KEYS": "not-a-key"})


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "abc"])
def test_intervals_must_be_finite_and_positive(value: str) -> None:
    with pytest.raises(SettingsError, match="CONFIGBUS_RECONCILE_INTERVAL_S"):
        BusSettings.from_env({"CONFIGBUS_RECONCILE_INTERVAL_S": value})


@pytest.mark.parametrize("name", ["team/a", "a:b", "{x}", " lead", "-x", "a" * 129, "", "é"])
def test_namespace_the_admin_cannot_address_is_refused_everywhere(name: str) -> None:
    from configbus.store import Keys

    with pytest.raises(SettingsError, match=r"CONFIGBUS_NAMESPACE.*letters, digits"):
        BusSettings.from_env({"CONFIGBUS_NAMESPACE": name})
    with pytest.raises(SettingsError, match="letters, digits"):
        Keys(name)


def test_replica_with_bad_namespace_exits_naming_the_rule() -> None:
    import subprocess
    import sys

    env = {"CONFIGBUS_NAMESPACE": "team/a", "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [sys.executable, "-m", "configbus", "proxy", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 2
    assert "'team/a' is not a valid namespace: 1-128 letters, digits" in res.stderr


def test_replica_labels_from_the_environment() -> None:
    s = BusSettings.from_env({"CONFIGBUS_REPLICA_LABELS": "zone=eu, tier=canary"})
    assert s.labels == {"zone": "eu", "tier": "canary"}
    with pytest.raises(SettingsError, match=r"CONFIGBUS_REPLICA_LABELS: .*'tier' is not key=value"):
        BusSettings.from_env({"CONFIGBUS_REPLICA_LABELS": "zone=eu,tier"})
