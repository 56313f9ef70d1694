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
