"""`POST /v1/embeddings`: the same routing, fallbacks, breakers and limits as chat, for
models whose purpose is embeddings; each endpoint refuses the other's models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import msgspec
import pytest

from proxy.embeddings import parse_embeddings
from proxy.errors import ProxyError
from tests.proxy.helpers import data_for, with_client
from tests.proxy.solo import Solo, http, solo
from tests.support import RedisServer

__all__ = ["http"]  # a fixture: imported for pytest

EMB = {"model": "emb", "input": ["hello", "world"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", "body must be a JSON object"),
        (b'{"input": "x"}', "'model' is required and must be a string"),
        (b'{"model": "e"}', "'input' must be a non-empty string or list"),
        (b'{"model": "e", "input": ""}', "'input' must not be empty"),
        (b'{"model": "e", "input": []}', "'input' must be a non-empty string or list"),
        (b'{"model": "e", "input": ["a", {"b": 1}]}', "input[1] must be a string"),
        (b'{"model": "e", "input": "a", "stream": true}', "embeddings are not streamed"),
    ],
)
def test_bad_requests_named(body: bytes, message: str) -> None:
    with pytest.raises(ProxyError) as exc:
        parse_embeddings(body)
    assert exc.value.status == 400 and exc.value.message.startswith(message)


@pytest.mark.parametrize("given", ["text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_input_forms(given: Any) -> None:
    assert parse_embeddings(msgspec.json.encode({"model": "e", "input": given}))["input"] == given


@pytest.fixture(scope="module")
def env(redis_server: RedisServer) -> Iterator[Solo]:
    with solo(redis_server, "embeddings") as s:
        yield s


def emb_doc(env: Solo, **model: Any) -> dict[str, Any]:
    data = data_for(env.a, env.b)
    data["models"] += [
        {"name": "emb", "purpose": "embeddings", "fallbacks": ["emb-backup"],
         "deployments": [{"provider": "upstream-a", "model": "emb-a"}], **model},
        {"name": "emb-backup", "purpose": "embeddings",
         "deployments": [{"provider": "upstream-b", "model": "emb-b"}]},
    ]  # fmt: skip
    return data


@pytest.mark.slow
def test_routed_with_params_and_usage(env: Solo, http: httpx.Client) -> None:
    env.publish(emb_doc(env, params={"dimensions": 4}))
    r = env.post(http, "/v1/embeddings", EMB)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and body["model"] == "emb-a"
    assert [len(d["embedding"]) for d in body["data"]] == [4, 4]
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert r.headers["x-configbus-provider"] == "upstream-a"
    assert r.headers["x-configbus-config-version"]
    seen = env.a.stats()
    assert seen["last_path"] == "/v1/embeddings"
    assert seen["last_request"] == {"model": "emb-a", "input": ["hello", "world"],
                                    "dimensions": 4}  # fmt: skip
    assert seen["last_headers"]["authorization"] == "Bearer sk-upstream-secret-a"


@pytest.mark.slow
def test_falls_back_when_the_upstream_fails(env: Solo, http: httpx.Client) -> None:
    env.publish(emb_doc(env))
    env.a.control(fail_rate=1.0, status=503)
    r = env.post(http, "/v1/embeddings", EMB)
    assert r.status_code == 200, r.text
    assert r.headers["x-configbus-provider"] == "upstream-b" and r.json()["model"] == "emb-b"
    env.b.control(fail_rate=1.0, status=500)
    r = env.post(http, "/v1/embeddings", EMB)
    assert r.status_code == 502 and "upstream-b answered 500" in r.json()["error"]["message"]


@pytest.mark.slow
def test_limits_apply(env: Solo, http: httpx.Client) -> None:
    data = with_client(emb_doc(env), "tight", "sk-tight", rate_limit={"rpm": 2})
    env.publish(data)
    codes = [
        http.post(env.url + "/v1/embeddings", json=EMB,
                  headers={"authorization": "Bearer sk-tight"}).status_code
        for _ in range(4)
    ]  # fmt: skip
    assert codes == [200, 200, 429, 429]


@pytest.mark.slow
def test_each_endpoint_refuses_the_others_models(env: Solo, http: httpx.Client) -> None:
    env.publish(emb_doc(env))
    r = env.post(http, "/v1/chat/completions",
                 {"model": "emb", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": "model 'emb' serves embeddings: call /v1/embeddings",
        "type": "invalid_request_error",
        "code": "wrong_model_purpose",
    }
    r = env.post(http, "/v1/embeddings", {"model": "m", "input": "x"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "model 'm' serves chat: call /v1/chat/completions"
    r = env.post(http, "/v1/embeddings", {"model": "nope", "input": "x"})
    assert r.status_code == 404
    models = http.get(env.url + "/v1/models", headers={"authorization": r.request.headers[
        "authorization"]}).json()  # fmt: skip
    assert {m["id"] for m in models["data"]} == {"m", "m-backup", "emb", "emb-backup"}
