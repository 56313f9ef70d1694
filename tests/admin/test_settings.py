"""The admin's own settings: history retention, read from its variable."""

from __future__ import annotations

import pytest

from admin.app import create_app
from admin.settings import AdminSettings
from configbus.errors import SettingsError
from configbus.testing import sample_data
from tests.admin.helpers import SECRET_KEY, TOKENS_ENV, auth, client
from tests.support import RedisServer


def admin_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "CONFIGBUS_ADMIN_TOKENS": TOKENS_ENV,
        "CONFIGBUS_REDIS_URL": redis_url,
        "CONFIGBUS_SECRET_KEYS": SECRET_KEY,
        "CONFIGBUS_ADMIN_PUBLISH_LIMIT": "1000000",
        **extra,
    }


def test_history_retention_defaults_to_100_and_names_its_variable() -> None:
    assert AdminSettings.from_env(admin_env("redis://127.0.0.1:1/0")).history_retention == 100
    with pytest.raises(
        SettingsError, match="CONFIGBUS_ADMIN_HISTORY_RETENTION: must be at least 1"
    ):
        AdminSettings.from_env(
            admin_env("redis://127.0.0.1:1/0", CONFIGBUS_ADMIN_HISTORY_RETENTION="0")
        )


@pytest.mark.parametrize("retention", [1, 2])
async def test_admin_trims_history_to_its_retention_never_head(
    redis_server: RedisServer, namespace: str, retention: int
) -> None:
    env = admin_env(redis_server.url, CONFIGBUS_ADMIN_HISTORY_RETENTION=str(retention))
    app = create_app(AdminSettings.from_env(env))
    base = f"/v1/namespaces/{namespace}"
    async with client(app) as c:
        for i in range(1, 5):
            doc = {**sample_data(), "metadata": {"n": str(i)}}
            r = await c.put(f"{base}/config", headers=auth("admin"), json={"document": doc})
            assert r.status_code == 201 and r.json()["version"] == i
        kept = (await c.get(f"{base}/versions", headers=auth("viewer"))).json()["versions"]
        assert [m["version"] for m in kept] == list(range(4, 4 - retention, -1))
        head = await c.get(f"{base}/config", headers=auth("viewer"))
        assert head.status_code == 200 and head.json()["version"] == 4
        gone = await c.get(f"{base}/versions/{4 - retention}", headers=auth("viewer"))
        assert gone.status_code == 404
