from __future__ import annotations

import asyncio

import msgspec

from configbus.testing import sample_document
from proxy.runtime import Builder


def with_provider_timeout(doc, name: str, timeout: float):  # type: ignore[no-untyped-def]
    providers = tuple(
        msgspec.structs.replace(p, timeout_s=timeout) if p.name == name else p
        for p in doc.providers
    )
    return msgspec.structs.replace(doc, providers=providers)


async def test_unchanged_providers_carry_over_changed_ones_are_new() -> None:
    b = Builder(env={"UPSTREAM_B_KEY": "kb"})
    doc = sample_document()
    r1 = b.build(doc, None)
    r2 = b.build(with_provider_timeout(doc, "upstream-a", 3), r1)
    assert r2.providers["upstream-b"] is r1.providers["upstream-b"]
    assert r2.providers["upstream-a"] is not r1.providers["upstream-a"]
    assert r2.routes["m"].targets[0].provider is r2.providers["upstream-a"]
    assert r2.providers["upstream-a"].headers["authorization"] == "Bearer sk-upstream-secret-a"
    assert r2.providers["upstream-b"].headers["authorization"] == "Bearer kb"


async def test_env_key_change_makes_a_new_provider() -> None:
    doc = sample_document()
    r1 = Builder(env={"UPSTREAM_B_KEY": "k1"}).build(doc, None)
    r2 = Builder(env={"UPSTREAM_B_KEY": "k2"}).build(doc, r1)
    assert r2.providers["upstream-b"] is not r1.providers["upstream-b"]


async def test_retired_snapshot_closes_replaced_pools_after_last_request() -> None:
    b = Builder(env={})
    doc = sample_document()
    r1 = b.build(doc, None)
    old_a = r1.providers["upstream-a"]
    pool = old_a.pool  # opened by a request
    r1.acquire()  # a request in flight on r1
    r2 = b.build(with_provider_timeout(doc, "upstream-a", 3), r1)
    r1.retire()
    await asyncio.sleep(0)
    assert not pool.closed and not old_a.closed
    r1.release()  # the last request ends
    assert old_a.closed and pool.closed
    kept = r2.providers["upstream-b"]
    assert not kept.closed and kept.owners == 1
    r2.retire()
    assert kept.closed


async def test_clients_by_hash_enabled_only_with_default_rpm() -> None:
    doc = sample_document()
    c0 = doc.clients[0]
    extra = msgspec.structs.replace(
        c0, name="off", key_sha256="0" * 64, enabled=False, rate_limit=None
    )
    doc = msgspec.structs.replace(doc, clients=(c0, extra))
    rt = Builder(env={}).build(doc, None)
    assert list(rt.clients) == [c0.key_sha256]
    assert rt.clients[c0.key_sha256].rpm == 600
    assert rt.clients[c0.key_sha256].may_use("anything")
