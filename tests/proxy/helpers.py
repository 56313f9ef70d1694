"""Helpers for proxy tests: mock upstreams, replica processes, publishing documents."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from configbus.codec import canonical
from configbus.connection import connect
from configbus.crypto import SecretBox, encrypt_secrets, generate_key
from configbus.store import Store
from configbus.testing import SAMPLE_CLIENT_KEY, key_sha256, sample_data
from configbus.validation import to_document
from tests.support import Service, configbus_cmd, free_port

SECRET_KEY = generate_key()
AUTH = {"authorization": f"Bearer {SAMPLE_CLIENT_KEY}"}
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Mock:
    def __init__(self, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = Service(
            configbus_cmd("mock-upstream", "--port", str(self.port), "--name", name),
            name=f"mock-{name}",
        )

    def start(self) -> Mock:
        self.service.start()
        self.service.wait_http(self.url + "/_stats")
        return self

    def control(self, **values: Any) -> None:
        httpx.post(self.url + "/_control", json=values, timeout=2).raise_for_status()

    def stats(self) -> dict[str, Any]:
        r = httpx.get(self.url + "/_stats", timeout=2)
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]


class Replica:
    def __init__(
        self, redis_url: str, namespace: str, *, replica_id: str, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service = Service(
            configbus_cmd("proxy", "--port", str(self.port)),
            env={
                "CONFIGBUS_REDIS_URL": redis_url,
                "CONFIGBUS_NAMESPACE": namespace,
                "CONFIGBUS_SECRET_KEYS": SECRET_KEY,
                "CONFIGBUS_REPLICA_ID": replica_id,
                "CONFIGBUS_RECONCILE_INTERVAL_S": "1",
                "CONFIGBUS_HEARTBEAT_INTERVAL_S": "1",
                "UPSTREAM_B_KEY": "sk-upstream-b",
                **(env or {}),
            },
            name=replica_id,
        )

    def start(self) -> Replica:
        self.service.start()
        self.service.wait_http(self.url + "/health/live")
        return self

    def version(self) -> int | None:
        v = httpx.get(self.url + "/status", timeout=2).json()["version"]
        return None if v is None else int(v)


@contextmanager
def running(*things: Mock | Replica) -> Iterator[None]:
    """Start all (in parallel), wait until each answers, stop all by PID at the end."""
    try:
        for t in things:
            t.service.start()
        for t in things:
            t.service.wait_http(t.url + ("/_stats" if isinstance(t, Mock) else "/health/live"))
        yield
    finally:
        for t in things:
            t.service.stop()


def data_for(a: Mock, b: Mock, *, model_to: str = "a") -> dict[str, Any]:
    """The sample document pointing at two mock upstreams; `m` served by upstream `model_to`."""
    data = sample_data(upstream_a=a.url + "/v1", upstream_b=b.url + "/v1")
    del data["clients"][0]["rate_limit"]  # tests that want a limit add their own client
    if model_to == "b":
        data["models"][0]["deployments"] = [{"provider": "upstream-b", "model": "mock-b"}]
    return data


def with_client(data: dict[str, Any], name: str, key: str, **fields: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    data["clients"].append({"name": name, "key_sha256": key_sha256(key), **fields})
    return data


def encode(data: dict[str, Any]) -> bytes:
    return canonical(encrypt_secrets(to_document(data), SecretBox([SECRET_KEY])))


def publish(redis_url: str, namespace: str, data: dict[str, Any]) -> int:
    async def go() -> int:
        redis = connect(redis_url)
        try:
            return (await Store(redis, namespace).publish(encode(data), author="test")).version
        finally:
            await redis.aclose()

    return asyncio.run(go())


def chat(
    client: httpx.Client, url: str, *, key: str = SAMPLE_CLIENT_KEY, **body: Any
) -> httpx.Response:
    return client.post(
        url + "/v1/chat/completions",
        json={**CHAT, **body},
        headers={"authorization": f"Bearer {key}"},
    )
