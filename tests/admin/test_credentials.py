"""Issue 19, credentials only in secrets: a base_url carrying a key is refused like a
credential header; a secret none of the admin's keys decrypts is refused at publish."""

from __future__ import annotations

import pytest

from configbus.crypto import SecretBox, generate_key
from configbus.errors import InvalidDocument
from configbus.testing import sample_data
from configbus.validation import to_document
from tests.admin.helpers import app_for, auth, client
from tests.support import RedisServer


@pytest.mark.parametrize(
    "url",
    [
        "https://user:sk-live-123@api.example.com/v1",
        "https://sk-live-123@api.example.com/v1",
        "https://api.example.com/v1?key=sk-live-123",
        "https://api.example.com/v1?x=1&API_KEY=sk-live-123",
        "https://api.example.com/v1?token=t",
        "https://api.example.com/v1?access_token=t",
        "https://example.blob/v1?sv=1&sig=abc",
    ],
)
def test_a_base_url_with_a_credential_is_refused(url: str) -> None:
    data = sample_data()
    data["providers"][0]["base_url"] = url
    with pytest.raises(InvalidDocument) as info:
        to_document(data)
    issues = info.value.issues
    assert [i.path for i in issues] == ["providers[0].base_url"]
    assert "api_key" in issues[0].message and "sk-live-123" not in issues[0].message


def test_plain_urls_pass() -> None:
    data = sample_data()
    data["providers"][0]["base_url"] = "https://api.example.com/v1?api-version=2024-06-01"
    to_document(data)


async def test_a_secret_no_admin_key_decrypts_is_refused_at_publish(
    redis_server: RedisServer, namespace: str
) -> None:
    data = sample_data()
    foreign = SecretBox([generate_key()]).encrypt("sk-from-elsewhere")
    data["providers"][0]["api_key"] = {"encrypted": foreign}
    async with client(app_for(redis_server.url)) as c:
        base = f"/v1/namespaces/{namespace}"
        for method, path, body in (
            ("PUT", "config", {"document": data}),
            ("POST", "rollouts", {"document": data, "stages": [{"selector": "10%"}]}),
        ):
            r = await c.request(method, f"{base}/{path}", headers=auth("admin"), json=body)
            assert r.status_code == 422, r.text
            err = r.json()["error"]
            assert err["code"] == "invalid_secret"
            assert err["issues"][0]["path"] == "providers[0].api_key"
        assert (await c.get(f"{base}/config", headers=auth("admin"))).status_code == 404
