"""One worker process of bench/propagation.py: `count` watchers (or floor subscribers).

Watcher i (counted across processes from `first`) is in group `a` when i is even, else `b`,
and carries the label `half=<group>`. The worker prints `<version> <group> <nth> <ts>` when
all its watchers of a group have applied that version for the nth time, `cpu <seconds>`
(its CPU time so far) for each `cpu` line on stdin, and exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import functools
import os
import resource
import sys
import time
from typing import Any

import msgspec

from configbus.connection import connect
from configbus.document import Document
from configbus.settings import BusSettings
from configbus.signing import RecordSigner
from configbus.store import Store
from proxy.gc_policy import freeze_startup_heap

NAMESPACE = "bench"
# The publisher's and the watchers' shared key (an admin's and its replicas'
# CONFIGBUS_SECRET_KEYS): fixed, so every worker process derives the same signer.
SIGNER = RecordSigner(["bench-propagation-signing-key"])
FLOOR_KEY = "floor:body"
FLOOR_CHANNEL = "floor:changes"


class Counter:
    def __init__(self, sizes: dict[str, int]) -> None:
        self.sizes = sizes
        self.applied: dict[tuple[int, str], int] = {}

    def count(self, version: int, group: str) -> None:
        key = (version, group)
        n = self.applied[key] = self.applied.get(key, 0) + 1
        if n % self.sizes[group] == 0:
            sys.stdout.write(f"{version} {group} {n // self.sizes[group]} {time.monotonic():.9f}\n")
            sys.stdout.flush()


def group_of(i: int) -> str:
    return "a" if i % 2 == 0 else "b"


async def run_worker(mode: str, url: str, count: int, first: int) -> None:
    groups = [group_of(first + i) for i in range(count)]
    counter = Counter({g: groups.count(g) for g in set(groups)})
    stop = await (floor if mode == "floor" else bus)(url, groups, counter)
    # Both modes run with a replica's collector policy: without it, full collections walking
    # every watcher's clients were a quarter of a bus worker's CPU (py-spy, K = 1,000), which
    # a replica (one watcher, its heap frozen after startup) never pays.
    freeze_startup_heap()
    profile = None
    if os.environ.get("BENCH_PROFILE"):  # a cProfile of each worker, written at exit
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "cpu":
            ru = resource.getrusage(resource.RUSAGE_SELF)
            sys.stdout.write(f"cpu {ru.ru_utime + ru.ru_stime:.6f}\n")
            sys.stdout.flush()
    if profile is not None:
        profile.disable()
        profile.dump_stats(f"{os.environ['BENCH_PROFILE']}.{mode}.{os.getpid()}")
    await stop()


async def bus(url: str, groups: list[str], counter: Counter) -> Any:
    from configbus.codec import decode_body
    from configbus.watcher import Watcher

    watchers = []
    for i, group in enumerate(groups):
        settings = BusSettings(
            namespace=NAMESPACE, replica_id=f"{os.getpid()}-{i}",
            reconcile_interval_s=5.0, heartbeat_interval_s=30.0,
        )  # fmt: skip
        store = Store(connect(url), NAMESPACE)
        w: Any = Watcher(
            store,
            decode=decode_body,
            settings=settings,
            labels={"half": group},
            signer=SIGNER,
            decode_signed=functools.partial(decode_body, semantic=False),
        )
        w.add_listener(lambda new, old, g=group: counter.count(new.version, g))
        await w.start()
        watchers.append(w)

    async def stop() -> None:
        for w in watchers:
            await w.stop()
            await w.store.redis.aclose()

    return stop


async def floor(url: str, groups: list[str], counter: Counter) -> Any:
    """PUBLISH → GET → typed decode, nothing else."""
    decoder = msgspec.json.Decoder(Document)
    tasks = []
    clients = []

    async def follow(group: str) -> None:
        redis = connect(url)
        clients.append(redis)
        pubsub = redis.pubsub()
        await pubsub.subscribe(FLOOR_CHANNEL)
        subscribed.release()
        while True:
            msg = await pubsub.get_message(timeout=1.0)
            if msg is None or msg["type"] != "message":
                continue
            decoder.decode(await redis.get(FLOOR_KEY))
            counter.count(int(msg["data"]), group)

    subscribed = asyncio.Semaphore(0)
    for group in groups:
        tasks.append(asyncio.create_task(follow(group)))
    for _ in groups:
        await subscribed.acquire()

    async def stop() -> None:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in clients:
            await c.aclose()

    return stop
