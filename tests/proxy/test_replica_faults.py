"""One replica: readiness before any config, live log level, Redis going away."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.proxy.helpers import AUTH, CHAT, Mock, Replica, data_for, publish, running, with_client
from tests.support import RedisServer, wait_for

pytestmark = pytest.mark.slow


def test_not_ready_until_a_config_arrives_then_log_level_applies_live(
    redis_server: RedisServer, namespace: str
) -> None:
    a, b = Mock("A"), Mock("B")
    replica = Replica(redis_server.url, namespace, replica_id="lonely")
    with running(a, b, replica), httpx.Client(timeout=5) as http:
        assert http.get(replica.url + "/health/live").status_code == 200
        assert http.get(replica.url + "/health/ready").status_code == 503
        resp = http.post(replica.url + "/v1/chat/completions", json=CHAT, headers=AUTH)
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "no_config"
        assert http.get(replica.url + "/status").json()["version"] is None

        data = data_for(a, b)
        data["logging"] = {"level": "DEBUG"}
        v = publish(redis_server.url, namespace, data)
        wait_for(lambda: http.get(replica.url + "/health/ready").status_code == 200, timeout=5)
        st = http.get(replica.url + "/status").json()
        assert st["version"] == v and st["log_level"] == "DEBUG"
        data["logging"] = {"level": "ERROR"}
        publish(redis_server.url, namespace, data)
        wait_for(
            lambda: http.get(replica.url + "/status").json()["log_level"] == "ERROR", timeout=5
        )


def test_redis_down_keeps_serving_and_limits_locally(
    own_redis: RedisServer, namespace: str
) -> None:
    a, b = Mock("A"), Mock("B")
    replica = Replica(own_redis.url, namespace, replica_id="solo")
    with running(a, b, replica), httpx.Client(timeout=5) as http:
        data = with_client(data_for(a, b), "capped", "sk-capped", rate_limit={"rpm": 3})
        v = publish(own_redis.url, namespace, data)
        wait_for(lambda: replica.version() == v, timeout=5)
        capped = {"authorization": "Bearer sk-capped"}
        url = replica.url + "/v1/chat/completions"
        assert http.post(url, json=CHAT, headers=capped).status_code == 200

        own_redis.stop(hard=True)
        for _ in range(5):
            assert http.post(url, json=CHAT, headers=AUTH).status_code == 200
        # Redis gone: the key's limit holds per replica from a local bucket (its 1/N share,
        # N = 1 here: 3), after what it still held of its lease (at most one request).
        codes = [http.post(url, json=CHAT, headers=capped).status_code for _ in range(5)]
        admitted = codes.count(200)
        assert admitted in (3, 4) and codes == [200] * admitted + [429] * (5 - admitted), codes
        st = http.get(replica.url + "/status").json()
        assert st["rate_limits_local"] is True and st["version"] == v
        assert http.get(replica.url + "/health/ready").status_code == 200

        # Redis comes back empty (scripts gone, new window): fleet limits resume.
        own_redis.restart(empty=True)
        wait_for(
            lambda: http.post(url, json=CHAT, headers=capped).status_code == 200,
            timeout=5,
            interval=0.2,
            what="the fleet limiter back on Redis",
        )
        assert http.get(replica.url + "/status").json()["rate_limits_local"] is False


def test_redis_down_at_start_serves_the_last_known_good_file_marked_stale(
    own_redis: RedisServer, namespace: str, tmp_path: Path
) -> None:
    a, b = Mock("A"), Mock("B")
    snap = str(tmp_path / "lkg.json")
    first = Replica(
        own_redis.url, namespace, replica_id="r-lkg", env={"CONFIGBUS_SNAPSHOT_PATH": snap}
    )
    with running(a, b, first), httpx.Client(timeout=5) as http:
        v = publish(own_redis.url, namespace, data_for(a, b))
        wait_for(lambda: first.version() == v, timeout=5)
        wait_for(lambda: Path(snap).exists(), timeout=5)
        own_redis.stop(hard=True)
        first.service.stop()
        again = Replica(
            own_redis.url, namespace, replica_id="r-lkg", env={"CONFIGBUS_SNAPSHOT_PATH": snap}
        )
        with running(again):
            assert http.get(again.url + "/health/ready").status_code == 200
            st = http.get(again.url + "/status").json()
            assert st["version"] == v and st["stale"] is True
            resp = http.post(again.url + "/v1/chat/completions", json=CHAT, headers=AUTH)
            assert resp.status_code == 200
            assert resp.json()["choices"][0]["message"]["content"] == "served by A"
