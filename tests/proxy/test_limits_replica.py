"""Limits as a client of one replica process sees them: 403s by address (X-Forwarded-For
believed from trusted proxies only), shadow limits, 429s and OpenAI's headers."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.proxy.helpers import (
    AUTH,
    Mock,
    Replica,
    chat,
    data_for,
    publish,
    running,
    with_client,
)
from tests.support import RedisServer, wait_for

_rev = itertools.count()


class One:
    def __init__(self, redis: RedisServer, namespace: str) -> None:
        self.redis, self.namespace = redis, namespace
        self.a, self.b = Mock("A"), Mock("B")
        self.replica = Replica(redis.url, namespace, replica_id="limits-1")
        self.url = self.replica.url

    def publish(self, data: dict[str, Any]) -> None:
        data = {**data, "metadata": {"rev": next(_rev)}}
        v = publish(self.redis.url, self.namespace, data)
        wait_for(lambda: self.replica.version() == v, timeout=10, what=f"version {v}")


@pytest.fixture(scope="module")
def one(redis_server: RedisServer) -> Iterator[One]:
    o = One(redis_server, "limits-replica")
    with running(o.a, o.b, o.replica):
        yield o


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as c:
        yield c


def _xff(client: httpx.Client, url: str, forwarded: str | None) -> httpx.Response:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    return client.post(
        url + "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        headers={**AUTH, **headers},
    )


def test_allow_and_deny_by_address_v4_and_v6_through_a_trusted_proxy(
    one: One, http: httpx.Client
) -> None:
    data = data_for(one.a, one.b)
    data["ip_rules"] = {
        "allow": ["2001:db8::/32", "192.0.2.0/24"],
        "deny": ["2001:db8:bad::/48", "192.0.2.66"],
        "trusted_proxies": ["127.0.0.1/32"],  # the test client connects from here
    }
    one.publish(data)
    codes = {
        xff: _xff(http, one.url, xff).status_code
        for xff in ("2001:db8::1", "2001:db8:bad::1", "192.0.2.1", "192.0.2.66", None)
    }
    assert codes == {
        "2001:db8::1": 200,
        "2001:db8:bad::1": 403,
        "192.0.2.1": 200,
        "192.0.2.66": 403,
        None: 403,  # the proxy itself (127.0.0.1) is not on the allow list
    }
    err = _xff(http, one.url, "2001:db8:bad::1").json()["error"]
    assert err["code"] == "ip_denied" and err["param"] == "ip"
    assert "2001:db8:bad::1" in err["message"]


def test_forwarded_for_from_an_untrusted_peer_is_ignored(one: One, http: httpx.Client) -> None:
    data = data_for(one.a, one.b)
    data["ip_rules"] = {"deny": ["127.0.0.1"], "trusted_proxies": ["192.0.2.0/24"]}
    one.publish(data)
    # We are not a trusted proxy: our claim to be 2001:db8::1 is ignored, 127.0.0.1 is denied.
    assert _xff(http, one.url, "2001:db8::1").status_code == 403
    data["ip_rules"] = {"allow": ["127.0.0.1"], "trusted_proxies": ["192.0.2.0/24"]}
    one.publish(data)
    assert _xff(http, one.url, "198.51.100.7").status_code == 200  # judged as 127.0.0.1


def test_per_address_limit_names_ip(one: One, http: httpx.Client) -> None:
    data = data_for(one.a, one.b)
    data["ip_rules"] = {"rate_limit": {"rpm": 2}, "trusted_proxies": ["127.0.0.1"]}
    one.publish(data)

    def leases() -> int:
        return int(http.get(one.url + "/status").json()["rate_limits"]["lease_calls"])

    # The first request is admitted on credit and leases for the address's bucket in the
    # background; until that lease lands, a second one may be refused (a busy machine).
    before = leases()
    codes = [_xff(http, one.url, "192.0.2.5").status_code]
    wait_for(lambda: leases() > before, timeout=5, what="the address's first lease")
    codes += [_xff(http, one.url, "192.0.2.5").status_code for _ in range(3)]
    assert codes == [200, 200, 429, 429]
    assert _xff(http, one.url, "192.0.2.6").status_code == 200  # another address, own bucket
    resp = _xff(http, one.url, "192.0.2.5")
    assert resp.json()["error"]["param"] == "ip" and "192.0.2.5" in resp.json()["error"]["message"]


def test_shadow_limit_admits_everything_and_counts_what_it_would_refuse(
    one: One, http: httpx.Client
) -> None:
    data = with_client(
        data_for(one.a, one.b), "shadowed", "sk-shadowed", rate_limit={"rpm": 3, "shadow": True}
    )
    one.publish(data)
    resps = [chat(http, one.url, key="sk-shadowed") for _ in range(6)]
    assert [r.status_code for r in resps] == [200] * 6
    flagged = [r.headers.get("x-configbus-shadow-limited") for r in resps]
    assert flagged[:3] == [None] * 3 and flagged[3:] == ["key"] * 3
    status = http.get(one.url + "/status").json()["rate_limits"]
    assert status["shadow_refused"] == {"key.requests": 3}
    assert "key.requests" not in status["refused"]
    metrics = http.get(one.url + "/metrics").text
    assert (
        'configbus_proxy_rate_limited_total{dimension="requests",limit="key",shadow="true"} 3.0'
        in metrics
    )


def test_answers_carry_openais_headers_and_a_tokens_429(one: One, http: httpx.Client) -> None:
    data = with_client(
        data_for(one.a, one.b), "metered", "sk-metered", rate_limit={"rpm": 300, "tpm": 50}
    )
    one.publish(data)
    ok = chat(http, one.url, key="sk-metered")
    assert ok.status_code == 200
    assert ok.headers["x-ratelimit-limit-requests"] == "300"
    assert ok.headers["x-ratelimit-limit-tokens"] == "50"
    assert {"x-ratelimit-remaining-tokens", "x-ratelimit-reset-requests"} <= set(ok.headers)
    # An answer that used more than the estimate overdraws the tokens bucket (the usage
    # corrects it); the next request waits for the bucket to refill.
    one.a.control(usage_tokens=500)
    try:
        big = chat(http, one.url, key="sk-metered")
        assert big.status_code == 200
        refused = wait_for(
            lambda: (r := chat(http, one.url, key="sk-metered")).status_code == 429 and r,
            timeout=2,
            what="the tokens limit refusing",
        )
    finally:
        one.a.control(usage_tokens=0)
    assert refused.status_code == 429
    err = refused.json()["error"]
    assert err["type"] == "rate_limit_error" and err["param"] == "key"
    assert "50 tokens per minute" in err["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
