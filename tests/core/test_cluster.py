"""The store and the watcher on a real three-node Redis Cluster, unchanged."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from configbus.codec import decode_body
from configbus.connection import connect
from configbus.document import Document
from configbus.settings import BusSettings
from configbus.store import Store
from configbus.tooling.localredis import LocalRedis
from configbus.watcher import Watcher
from tests.core.helpers import body
from tests.support import free_port, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster_url() -> Iterator[str]:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is needed to form a cluster")
    root = Path(tempfile.mkdtemp(prefix="cb-cluster-"))
    ports: list[int] = []
    while len(ports) < 3:
        port = free_port()
        if port + 10000 <= 65535:  # each node also listens on port + 10000 (the cluster bus)
            ports.append(port)
    nodes = [
        LocalRedis(
            port=port,
            dir=root / str(port),
            extra_args=("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
        )
        for port in ports
    ]
    try:
        for node in nodes:
            node.spawn()
        for node in nodes:
            node.wait_ready()
        subprocess.run(
            ["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        wait_for(lambda: "cluster_state:ok" in subprocess.run(
            ["redis-cli", "-p", str(ports[0]), "cluster", "info"], capture_output=True, text=True
        ).stdout, timeout=15, what="cluster_state:ok")  # fmt: skip
        yield f"redis://127.0.0.1:{ports[0]}/0?cluster=true"
    finally:
        for node in nodes:
            node.cleanup()
        shutil.rmtree(root, ignore_errors=True)


async def test_store_and_watcher_work_unchanged_on_a_cluster(cluster_url: str) -> None:
    pub = Store(connect(cluster_url), "fleet")
    watcher_store = Store(connect(cluster_url), "fleet")
    w: Watcher[Document, Document] = Watcher(
        watcher_store,
        decode=decode_body,
        settings=BusSettings(namespace="fleet", reconcile_interval_s=60, replica_id="c1"),
    )
    try:
        assert (await pub.publish(body(1), expected_version=0)).version == 1
        assert (await pub.publish(body(1), idempotency_key="k")).outcome == "noop"
        await w.start()
        async with asyncio.timeout(5):
            await w.wait_for(lambda c: c is not None and c.version == 1)
            while not w.subscribed:  # noqa: ASYNC110 - a flag with no event of its own
                await asyncio.sleep(0.01)
        # The change reaches the watcher over the cluster's pub/sub (reconcile is 60 s).
        await pub.publish(body(2), expected_version=1)
        await pub.rollback(1)
        async with asyncio.timeout(5):
            await w.wait_for(lambda c: c is not None and c.version == 3)
        assert w.current is not None and w.current.value.metadata["n"] == 1

        assert [m.version for m in await pub.versions()] == [3, 2, 1]
        assert [e.outcome for e in await pub.audit_entries()][:2] == ["created", "created"]
        async with asyncio.timeout(5):
            while not [r for r in await pub.replicas() if r.status.version == 3]:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        copy = Store(pub.redis, "fleet-copy")
        assert await copy.import_(await pub.export()) == 3
    finally:
        await w.stop()
        await pub.redis.aclose()
        await watcher_store.redis.aclose()


def test_replica_serves_and_limits_through_a_cluster(cluster_url: str) -> None:
    import httpx

    from tests.proxy.helpers import Mock, Replica, chat, data_for, publish, running, with_client

    a, b = Mock("A"), Mock("B")
    replica = Replica(cluster_url, "proxied", replica_id="cluster-r1")
    with running(a, b, replica):
        data = with_client(data_for(a, b), "limited", "sk-limited-key", rate_limit={"rpm": 2})
        publish(cluster_url, "proxied", data)
        replica.service.wait_http(replica.url + "/health/ready")
        with httpx.Client(timeout=5) as client:
            r = chat(client, replica.url)
            assert r.status_code == 200, r.text + replica.service.output()[-3000:]
            assert "served by A" in r.text
            codes = [chat(client, replica.url, key="sk-limited-key").status_code for _ in range(3)]
        assert codes == [200, 200, 429]
    node = cluster_url.split("?")[0].removeprefix("redis://").removesuffix("/0")
    keys = subprocess.run(
        ["redis-cli", "--cluster", "call", node, "KEYS", "cb:{proxied}:rl:*"],
        capture_output=True, text=True, timeout=10,
    ).stdout  # fmt: skip
    assert "cb:{proxied}:rl:client:limited" in keys, keys  # the fleet counter is in the cluster
