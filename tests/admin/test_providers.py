"""Provider discovery and tests against real mock upstream processes: a live one, a dead
port, and one answering 401; `validate?probe=true` refuses a document whose new provider
cannot be reached."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from admin.probe import ask, models_request
from configbus.cli import main
from configbus.testing import sample_data
from configbus.validation import to_document
from tests.admin.helpers import TOKENS, app_for, auth, client, serve
from tests.proxy.helpers import Mock
from tests.support import RedisServer, free_port

KEY = "sk-upstream-secret-a"


@pytest.fixture
def mock() -> Iterator[Mock]:
    m = Mock("a").start()
    yield m
    m.service.stop()


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


async def test_models_and_test_of_a_live_a_dead_and_a_refusing_provider(
    redis_server: RedisServer, namespace: str, mock: Mock
) -> None:
    base = f"/v1/namespaces/{namespace}"
    doc = sample_data(upstream_a=mock.url + "/v1", upstream_b=dead_url(), api_key=KEY)
    async with client(app_for(redis_server.url)) as c:
        assert (
            await c.post(f"{base}/providers/upstream-a/test", headers=auth("admin"))
        ).status_code == 404
        r = await c.put(f"{base}/config", headers=auth("admin"), json={"document": doc})
        assert r.status_code == 201, r.text

        r = await c.get(f"{base}/providers/upstream-a/models", headers=auth("publisher"))
        assert r.status_code == 200, r.text
        assert r.json()["models"] == ["mock-a"]
        assert mock.stats()["last_headers"]["authorization"] == f"Bearer {KEY}"

        r = await c.post(f"{base}/providers/upstream-a/test", headers=auth("publisher"))
        live = r.json()
        assert r.status_code == 200 and live["ok"] is True and live["status"] == 200
        assert live["latency_ms"] > 0 and live["error"] is None and live["key"] == "secret"

        # A dead port: no answer, said so; models is a 502 naming the provider.
        r = await c.post(f"{base}/providers/upstream-b/test", headers=auth("admin"))
        dead = r.json()
        assert r.status_code == 200 and dead["ok"] is False and dead["status"] is None
        assert dead["error"] == "ConnectError" and dead["key"] == "env"
        r = await c.get(f"{base}/providers/upstream-b/models", headers=auth("admin"))
        assert r.status_code == 502 and "did not answer" in r.json()["error"]["message"]

        # The live mock now refuses the key.
        mock.control(fail_rate=1.0, status=401)
        r = await c.post(f"{base}/providers/upstream-a/test", headers=auth("admin"))
        refused = r.json()
        assert refused["ok"] is False and refused["status"] == 401
        assert "a mock failure" in refused["error"] and KEY not in r.text
        r = await c.get(f"{base}/providers/upstream-a/models", headers=auth("admin"))
        assert r.status_code == 502 and "answered 401" in r.json()["error"]["message"]

        r = await c.post(f"{base}/providers/nope/test", headers=auth("admin"))
        assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_provider"
        # The key is used: a viewer (read only) may not.
        r = await c.post(f"{base}/providers/upstream-a/test", headers=auth("viewer"))
        assert r.status_code == 403
        r = await c.get(f"{base}/providers/upstream-a/models", headers=auth("sre"))
        assert r.status_code == 403


async def test_the_key_is_blotted_out_of_the_answer() -> None:
    p = to_document(sample_data(api_key=KEY)).providers[0]

    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, text=f'{{"error": "invalid key {KEY}"}}')

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        test, body = await ask(http, p, None, "providers[0]")
    assert body is None and test.status == 401 and test.error == '{"error": "invalid key ***"}'


async def test_validate_probe_refuses_a_new_provider_that_cannot_be_reached(
    redis_server: RedisServer, namespace: str, mock: Mock
) -> None:
    base = f"/v1/namespaces/{namespace}"
    good = sample_data(upstream_a=mock.url + "/v1", upstream_b=mock.url + "/v1")
    async with client(app_for(redis_server.url)) as c:
        r = await c.put(f"{base}/config", headers=auth("admin"), json={"document": good})
        assert r.status_code == 201
        moved = sample_data(upstream_a=dead_url(), upstream_b=mock.url + "/v1")
        r = await c.post(
            f"{base}/validate?probe=true", headers=auth("admin"), json={"document": moved}
        )
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["code"] == "probe_failed"
        (issue,) = err["issues"]  # upstream-b did not change: not asked
        assert issue["path"] == "providers[0]" and "ConnectError" in issue["message"]
        # Without the probe, the same document is valid.
        r = await c.post(f"{base}/validate", headers=auth("admin"), json={"document": moved})
        assert r.status_code == 200
        r = await c.post(
            f"{base}/validate?probe=true", headers=auth("admin"), json={"document": good}
        )
        assert r.status_code == 200
        r = await c.post(
            f"{base}/validate?probe=maybe", headers=auth("admin"), json={"document": good}
        )
        assert r.status_code == 400


def test_cli_providers_models_and_test(
    redis_server: RedisServer, namespace: str, mock: Mock, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = sample_data(upstream_a=mock.url + "/v1", upstream_b=dead_url(), api_key=KEY)
    with serve(app_for(redis_server.url)) as url:
        httpx.put(
            f"{url}/v1/namespaces/{namespace}/config", headers=auth("admin"), json={"document": doc}
        ).raise_for_status()

        def cli(*args: str) -> tuple[int, str, str]:
            code = main(
                [
                    "providers",
                    *args,
                    "--admin-url",
                    url,
                    "--token",
                    TOKENS["admin"][1],
                    "-n",
                    namespace,
                ]
            )
            out = capsys.readouterr()
            return code, out.out, out.err

        assert cli("models", "upstream-a")[:2] == (0, "mock-a\n")
        code, out, _ = cli("test", "upstream-a")
        assert code == 0 and out.startswith("ok: upstream-a answered 200")
        code, out, _ = cli("test", "upstream-b")
        assert code == 1 and "did not answer" in out and "ConnectError" in out
        mock.control(fail_rate=1.0, status=401)
        code, out, _ = cli("test", "upstream-a")
        assert code == 1 and "answered 401" in out and KEY not in out
        code, _, err = cli("models", "upstream-a")
        assert code == 1 and "answered 401" in err
        code, _, err = cli("test", "nope")
        assert code == 1 and "no provider named 'nope'" in err


def test_anthropic_is_asked_in_its_dialect_at_the_url_the_replicas_use() -> None:
    data = sample_data(upstream_a="http://127.0.0.1:9/anthropic", api_key=KEY)
    data["providers"][0]["type"] = "anthropic"
    p = to_document(data).providers[0]
    url, headers = models_request(p, KEY)
    assert url == "http://127.0.0.1:9/anthropic/v1/models"
    assert headers["x-api-key"] == KEY and "Authorization" not in headers


async def test_azure_is_asked_for_its_models_with_api_version_and_api_key(mock: Mock) -> None:
    data = sample_data(upstream_a=mock.url, api_key=KEY)
    data["providers"][0].update(type="azure", api_version="2024-10-21")
    p = to_document(data).providers[0]
    url, headers = models_request(p, KEY)
    assert url == f"{mock.url}/openai/models?api-version=2024-10-21"
    assert headers["api-key"] == KEY and "Authorization" not in headers
    async with httpx.AsyncClient() as http:
        test, body = await ask(http, p, None, "providers[0]")
    assert test.ok and test.status == 200 and body["data"][0]["id"] == "mock-a"
    seen = mock.stats()
    assert seen["last_headers"]["api-key"] == KEY
    assert (seen["last_path"], seen["last_query"]) == ("/openai/models", "api-version=2024-10-21")
