"""Bodies and files built to crash parsers get a clear 400 (or CLI error), never a 500 or a
traceback; the admin and the CLI's offline check give the same verdict."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from configbus.testing import sample_data
from tests.admin.helpers import app_for, auth, client
from tests.support import RedisServer

DEEP = b'{"document": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}"
DUPLICATE = b'{"document": {"providers": [], "providers": []}}'


@pytest.mark.parametrize(
    ("body", "message"),
    [(DEEP, "nested deeper than"), (DUPLICATE, "duplicate key 'providers'")],
)
async def test_hostile_bodies_are_400(
    redis_server: RedisServer, namespace: str, body: bytes, message: str
) -> None:
    async with client(app_for(redis_server.url)) as c:
        for method, path in (("PUT", "config"), ("POST", "validate"), ("POST", "rollouts")):
            r = await c.request(
                method,
                f"/v1/namespaces/{namespace}/{path}",
                headers={**auth("admin"), "content-type": "application/json"},
                content=body,
            )
            assert r.status_code == 400, (path, r.text)
            assert message in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("nan.json", '{"metadata": {"x": NaN}}'),
        ("dup.yaml", "providers: []\nproviders: []\n"),
        ("deep.json", "[" * 3000 + "]" * 3000),
        ("bomb.yaml", "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
         + "".join(f"{c}: &{c} [{','.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdef", "bcdefg", strict=True))),
        ("binary.json", "\udcff"),
    ],
)  # fmt: skip
def test_cli_refuses_without_a_traceback(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    res = subprocess.run(
        [sys.executable, "-m", "configbus", "validate", "--offline", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert name in res.stderr


async def test_offline_and_online_give_the_same_verdict(
    redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    from configbus.codec import parse
    from configbus.errors import InvalidDocument

    data = sample_data()
    data["metadata"] = {"x": float("nan")}
    text = json.dumps({"document": data})
    with pytest.raises(InvalidDocument):
        parse(text, "json")
    async with client(app_for(redis_server.url)) as c:
        r = await c.post(
            f"/v1/namespaces/{namespace}/validate",
            headers={**auth("admin"), "content-type": "application/json"},
            content=text.encode(),
        )
    assert r.status_code == 400
