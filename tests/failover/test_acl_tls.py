"""The ACL users of docs/acl.md on a redis-server with a TLS port (certificates made here):
a replica user follows and reports, and cannot publish; the admin user publishes."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from configbus.codec import decode_body
from configbus.connection import connect
from configbus.counters import FleetCounter, counter_key
from configbus.document import Document
from configbus.errors import StoreError
from configbus.store import Store
from configbus.tooling.procs import Child, free_port
from configbus.watcher import Watcher
from tests.core.helpers import body
from tests.core.test_watcher import settings, until
from tests.support import ROOT

pytestmark = pytest.mark.slow

NS = "acl"
REPLICA_PW = "replica-secret-1"
ADMIN_PW = "admin-secret-1"


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool) -> x509.Certificate:  # fmt: skip
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def make_certs(d: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("configbus test CA", ca_key, None, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert("127.0.0.1", key, ca, ca_key, ca=False)
    (d / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (d / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def acl_lines() -> list[str]:
    """The `ACL SETUSER` lines of docs/acl.md, as an ACL file's `user` lines."""
    text = (ROOT / "docs" / "acl.md").read_text()
    lines = re.findall(r"^ACL SETUSER (.+)$", text, re.M)
    assert len(lines) == 3
    fill = {"NS": NS, "REPLICA_PASSWORD": REPLICA_PW, "ADMIN_PASSWORD": ADMIN_PW}
    out = []
    for line in lines:
        for k, v in fill.items():
            line = line.replace(k, v)
        out.append("user " + line)
    return out


class TlsRedis:
    def __init__(self, d: Path) -> None:
        make_certs(d)
        (d / "users.acl").write_text("\n".join(acl_lines()) + "\n")
        self.port = free_port()
        self.ca = d / "ca.pem"
        argv = [
            shutil.which("redis-server") or "redis-server", "--port", "0",
            "--tls-port", str(self.port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key"),
            "--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "no",
            "--aclfile", str(d / "users.acl"), "--save", "", "--appendonly", "no",
            "--dir", str(d), "--loglevel", "warning",
        ]  # fmt: skip
        self.child = Child(argv, name="redis-tls", log=d / "redis.log")

    def url(self, user: str, password: str) -> str:
        return f"rediss://{user}:{password}@127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca}"

    def start(self) -> TlsRedis:
        self.child.start()

        def up() -> bool:
            c = redis.Redis.from_url(self.url("cb-admin", ADMIN_PW), socket_timeout=0.5)
            try:
                return bool(c.ping())
            except (redis.RedisError, OSError):
                return False
            finally:
                c.close()

        self.child.wait_ready(up, timeout=10, interval=0.05, what="TLS redis answering")
        return self


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    server = TlsRedis(tmp_path).start()
    yield server
    server.child.stop()


async def test_replica_and_admin_users_over_tls_do_their_jobs_and_no_more(
    tls_redis: TlsRedis,
) -> None:
    admin = Store(connect(tls_redis.url("cb-admin", ADMIN_PW)), NS)
    replica_url = tls_redis.url(f"cb-replica-{NS}", REPLICA_PW)
    replica = Store(connect(replica_url), NS)
    counter = FleetCounter(replica.redis, window_s=60, timeout_s=2)
    try:
        first = await admin.publish(body(1), author="test")
        v1 = first.version
        w: Watcher[Document, Document] = Watcher(
            replica, decode=decode_body, settings=settings(NS, replica_url, replica_id="r1")
        )
        async with w:
            await until(lambda: w.current and w.current.version == v1, 5, "replica applies v1")
            v2 = (await admin.publish(body(2), author="test")).version
            await until(lambda: w.current and w.current.version == v2, 5, "replica applies v2")

            async def reported() -> bool:
                return any(r.status.version == v2 for r in await admin.replicas())

            for _ in range(100):  # bounded: heartbeats every 0.5 s
                if await reported():
                    break
                await asyncio.sleep(0.05)
            assert await reported(), "the replica's status reached Redis"
            # ...and raised its lineage's highest reported version, which publishes read.
            assert await admin.redis.zscore(admin.keys.reported, first.epoch) == v2
        # Counters: the limiter's script on the namespace's rl keys.
        n, _ = await counter.count(counter_key("client", "c1", namespace=NS))
        assert n == 1
        # The replica user cannot publish: the admin's script is refused.
        with pytest.raises(StoreError, match=r"(?i)noperm|permission"):
            await replica.publish(body(3), author="intruder")
        assert (await admin.head()).version == v2
        # ...nor write head, nor read another namespace.
        with pytest.raises(redis.exceptions.NoPermissionError):
            await replica.redis.set(f"cb:{{{NS}}}:head", "99")
        with pytest.raises(redis.exceptions.NoPermissionError):
            await replica.redis.get("cb:{other}:head")
    finally:
        await counter.aclose()
        await replica.redis.aclose()
        await admin.redis.aclose()


async def test_the_next_publish_numbers_above_a_version_only_replicas_report(
    redis_server: object, namespace: str
) -> None:
    """After a failover that lost versions, replicas still report them: the next publish is
    numbered above them."""
    from configbus.records import ReplicaStatus

    url = redis_server.url  # type: ignore[attr-defined]
    store = Store(connect(url), namespace)
    try:
        first = await store.publish(body(1))
        await store.report(
            ReplicaStatus(replica_id="r9", state="applied", version=first.version + 7,
                          epoch=first.epoch, sha256="0" * 64)
        )  # fmt: skip
        rows = await store.replicas()
        assert rows[0].status.version == first.version + 7
        nxt = await store.publish(body(2))
        assert nxt.version == first.version + 8
    finally:
        await store.redis.aclose()
