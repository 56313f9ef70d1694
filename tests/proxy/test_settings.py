from __future__ import annotations

import pytest

from configbus.errors import SettingsError
from proxy.settings import DEFAULT_MAX_BODY_BYTES, ProxySettings


def test_from_env_reads_bus_and_proxy_settings_and_flags_win() -> None:
    env = {"CONFIGBUS_NAMESPACE": "n1", "CONFIGBUS_PROXY_MAX_BODY_BYTES": "1000"}
    s = ProxySettings.from_env(env, replica_id="r9")
    assert (s.bus.namespace, s.bus.replica_id, s.max_body_bytes) == ("n1", "r9", 1000)
    assert ProxySettings.from_env(env, max_body_bytes=5).max_body_bytes == 5
    assert ProxySettings.from_env({}).max_body_bytes == DEFAULT_MAX_BODY_BYTES


@pytest.mark.parametrize("raw", ["lots", "0"])
def test_bad_body_limit_names_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="CONFIGBUS_PROXY_MAX_BODY_BYTES"):
        ProxySettings.from_env({"CONFIGBUS_PROXY_MAX_BODY_BYTES": raw})
