"""Sentinel failover with real redis-server and redis-sentinel processes: the admin and the
replicas follow the new primary, and with `min_replicas_to_ack` no acknowledged publish is
lost when the primary dies."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

import pytest
import redis

from configbus.codec import decode_body, sha256_hex
from configbus.connection import connect
from configbus.document import Document
from configbus.errors import NotReplicated, StoreError
from configbus.store import Store
from configbus.testing import sample_data
from configbus.watcher import Watcher
from tests.admin.helpers import app_for, auth, client
from tests.core.helpers import body
from tests.core.test_watcher import settings, until
from tests.failover.sentinels import SentinelSet

pytestmark = pytest.mark.slow

FOLLOW_WITHIN_S = 5.0


def report(what: str, **figures: Any) -> None:
    print(f"\n[{what}] " + " ".join(f"{k}={v}" for k, v in figures.items()))


def head_on(port: int, namespace: str) -> int:
    with redis.Redis(port=port, socket_timeout=1) as c:
        return int(c.get(f"cb:{{{namespace}}}:head") or 0)


async def test_a_failover_under_load_moves_the_admin_and_every_replica_to_the_new_primary(
    sentinels: SentinelSet, namespace: str
) -> None:
    url = sentinels.url()
    async with AsyncExitStack() as stack:
        watchers: list[Watcher[Document, Document]] = []
        for i in range(3):
            store = Store(connect(url), namespace)
            stack.push_async_callback(store.redis.aclose)
            w: Watcher[Document, Document] = Watcher(
                store, decode=decode_body, settings=settings(namespace, url, replica_id=f"r{i}")
            )
            await stack.enter_async_context(w)
            watchers.append(w)
        # Every version any replica ran: (epoch, number) -> its sha256s.
        applied: dict[tuple[str, int], set[str]] = {}
        for w in watchers:
            w.add_listener(
                lambda new, old: applied.setdefault((new.epoch, new.version), set()).add(new.sha256)
            )
        c = await stack.enter_async_context(client(app_for(url, namespace)))
        path = f"/v1/namespaces/{namespace}/config"
        published: list[int] = []
        failed_publishes = 0

        async def publish(n: int) -> None:
            nonlocal failed_publishes
            data = sample_data()
            data["metadata"] = {"n": n}
            r = await c.put(path, headers=auth("publisher"), json={"document": data})
            if r.status_code == 201:
                published.append(r.json()["version"])
            else:
                failed_publishes += 1  # 503 while the primary is away: the client retries

        await publish(0)
        await until(lambda: all(w.current and w.current.version == published[-1] for w in watchers),
                    5, "replicas on the first version")  # fmt: skip

        # Client load: every "request" reads the replica's one snapshot reference.
        requests = no_config = 0
        stop = asyncio.Event()

        async def load() -> None:
            nonlocal requests, no_config
            while not stop.is_set():
                for w in watchers:
                    requests += 1
                    if w.current is None:
                        no_config += 1
                await asyncio.sleep(0.001)

        async def publisher() -> None:
            n = 1
            while not stop.is_set():
                await publish(n)
                n += 1
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(load()), asyncio.create_task(publisher())]
        await asyncio.sleep(0.5)
        old = sentinels.primary_port()
        assert old is not None
        t0 = time.monotonic()
        sentinels.failover()
        new = await asyncio.to_thread(sentinels.wait_new_primary, old)
        promoted_s = time.monotonic() - t0
        # Publishing goes on through the admin. Between the promotion and the old primary's
        # demotion the admin may still write to the old one: those versions are lost (no
        # min_replicas_to_ack here) though replicas applied them. The first publish on the
        # new primary waits for the replicas' reports there (durability.FENCE), so no
        # publish, not even the first, takes a number a replica ran.
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.gather(*tasks)
        before = len(published)

        async def published_once_more() -> bool:
            await publish(10_000)  # a 503 (the admin's breaker still open) is retried
            return len(published) > before

        async with asyncio.timeout(10):
            while not await published_once_more():  # noqa: ASYNC110 - bounded by the timeout
                await asyncio.sleep(0.1)
        head = head_on(new, namespace)
        assert head == published[-1], "the last 201 is the new primary's head"
        with redis.Redis(port=new, socket_timeout=1) as r:
            lost = [v for v in published if not r.exists(f"cb:{{{namespace}}}:v:{v}")]
        # Numbers a replica ran that the new primary gave to another version (a number
        # that was lost and skipped is no reuse: the counter moved above it, as it should).
        # A new epoch (the new primary came up without the data) numbers from 1 again, by
        # design: numbers are compared within the new primary's epoch.
        with redis.Redis(port=new, socket_timeout=1) as r:
            epoch = (r.get(f"cb:{{{namespace}}}:epoch") or b"").decode()
            stored = {v: r.hget(f"cb:{{{namespace}}}:v:{v}", "sha256") for _, v in applied}
        epochs = len({e for e, _ in applied})
        reused = sorted(
            {v for (e, v), shas in applied.items()
             if e == epoch and stored[v] is not None and shas != {stored[v].decode()}}
            | ({v for v in published if published.count(v) > 1} if epochs == 1 else set())
        )  # fmt: skip
        await until(lambda: all(w.current and w.current.version == head for w in watchers),
                    max(0.1, FOLLOW_WITHIN_S - (time.monotonic() - t0)),
                    f"every replica on the new primary's head {head}")  # fmt: skip
        on_head_s = time.monotonic() - t0
        # Their status reached the new primary too, within a report gap or a retry.
        direct = Store(connect(f"redis://127.0.0.1:{new}/0"), namespace)
        on_head: set[str] = set()
        try:
            async with asyncio.timeout(2):
                while on_head != {"r0", "r1", "r2"}:
                    statuses = await direct.replicas()
                    on_head = {s.status.replica_id for s in statuses if s.status.version == head}
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(
                f"only {on_head} reported head {head} to the new primary"
            ) from None
        finally:
            await direct.redis.aclose()
        report(
            "sentinel failover",
            promoted_s=f"{promoted_s:.2f}",
            reused_numbers=reused,
            replicas_on_new_head_s=f"{on_head_s:.2f}",
            requests=requests,
            failed_by_config=no_config,
            publishes_ok=len(published),
            publishes_503=failed_publishes,
            lost_201s_without_min_replicas_to_ack=len(lost),
            lost_numbers_replicas_ran=sorted(set(lost) & {v for _, v in applied}),
            epochs_replicas_ran=epochs,
        )
        assert no_config == 0
        assert on_head_s < FOLLOW_WITHIN_S
        assert reused == [], f"numbers replicas ran were given to other versions: {reused}"


async def test_no_acknowledged_publish_is_lost_when_the_primary_is_killed(
    sentinels: SentinelSet, namespace: str
) -> None:
    store = Store(connect(sentinels.url()), namespace, min_replicas_to_ack=1, ack_timeout_ms=300)
    acked: dict[int, str] = {}
    not_replicated = errors = 0
    stop = asyncio.Event()

    async def loop() -> None:
        nonlocal not_replicated, errors
        n = 0
        while not stop.is_set():
            n += 1
            b = body(n)
            try:
                res = await store.publish(b, idempotency_key=f"k{n}")
            except NotReplicated:
                not_replicated += 1
            except StoreError:
                errors += 1
                await asyncio.sleep(0.02)
            else:
                acked[res.version] = sha256_hex(b)

    try:
        task = asyncio.create_task(loop())
        await until(lambda: len(acked) >= 30, 10, "acknowledged publishes")
        old = sentinels.a.port
        t0 = time.monotonic()
        sentinels.a.stop(hard=True)
        new = await asyncio.to_thread(sentinels.wait_new_primary, old)
        promoted_s = time.monotonic() - t0
        await asyncio.sleep(0.5)  # publishes now reach no replica: never acknowledged
        stop.set()
        await task
        with redis.Redis(port=new, socket_timeout=1) as c:
            kept = {v: c.hget(f"cb:{{{namespace}}}:v:{v}", "sha256") for v in acked}
        lost = sorted(v for v, sha in acked.items() if kept[v] is None or kept[v].decode() != sha)
        report(
            "acknowledged publishes across a hard kill",
            acked=len(acked),
            not_replicated=not_replicated,
            errors=errors,
            promoted_s=f"{promoted_s:.2f}",
            lost_acked=len(lost),
        )
        assert lost == []
    finally:
        stop.set()
        await store.redis.aclose()
