"""Propagation latency: from a publish to "all K watchers applied it".

Starts its own redis-server, runs K watchers spread over several processes, publishes
N versions one after another (each waits until every watcher applied the previous one)
and prints JSON with p50 / p99 / max milliseconds, for a 10 KB and a 1 MB document.

    python bench/propagation.py [--ks 1,20,100] [--publishes 200] [--sizes 10000,1000000]

Timestamps are CLOCK_MONOTONIC (`time.monotonic`), which every process on the machine shares.
Each watcher does the full replica work: fetch, checksum, strict decode, semantic checks, swap.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import sys
import time
from typing import Any

from configbus.codec import canonical, decode_body
from configbus.connection import connect
from configbus.settings import BusSettings
from configbus.store import Store
from configbus.tooling.localredis import LocalRedis
from configbus.tooling.procs import child_options, signal_tree
from configbus.validation import to_document
from configbus.watcher import Watcher

NAMESPACE = "bench"


def document(size: int) -> bytes:
    """A realistic document of about `size` bytes: providers, models with fallbacks, clients.
    It ends with `"metadata":{"n":0}}`, so `numbered()` can make each version unique."""
    providers = [
        {"name": f"p{i}", "base_url": f"http://127.0.0.1:{9000 + i}/v1", "api_key_env": "K",
         "rate_limit": {"rpm": 6000}, "headers": {"x-team": "bench"}}
        for i in range(8)
    ]  # fmt: skip
    models: list[dict[str, Any]] = []
    clients: list[dict[str, Any]] = []
    data = {"providers": providers, "models": models, "clients": clients, "metadata": {"n": 0}}
    for i in range(1_000_000):
        if (i < 200 or i % 50 == 0) and len(canonical(to_document(data))) >= size:
            break
        models.append({
            "name": f"model-{i}",
            "deployments": [{"provider": f"p{(i + j) % 8}", "model": f"upstream-model-{i}-{j}",
                             "weight": j + 1} for j in range(2)],
            "fallbacks": [f"model-{i - 1}"] if i else [],
            "params": {"temperature": 0.5, "max_tokens": 512},
        })  # fmt: skip
        clients.append({"name": f"client-{i}", "key_sha256": f"{i:064x}", "models": ["*"]})
    body = canonical(to_document(data))
    assert body.endswith(SUFFIX)
    return body


SUFFIX = b'"metadata":{"n":0}}'


def numbered(base: bytes, n: int) -> bytes:
    return base[: -len(SUFFIX)] + b'"metadata":{"n":%d}}' % n


# -- worker process: W watchers; prints "<version> <monotonic>" once all W applied it --------


async def worker(url: str, count: int) -> None:
    applied: dict[int, int] = {}
    out = sys.stdout

    def on_change(new: Any, old: Any) -> None:
        n = applied.get(new.version, 0) + 1
        applied[new.version] = n
        if n == count:
            out.write(f"{new.version} {time.monotonic():.9f}\n")
            out.flush()

    watchers = []
    for i in range(count):
        store = Store(connect(url), NAMESPACE)
        settings = BusSettings(
            namespace=NAMESPACE, replica_id=f"{os.getpid()}-{i}",
            reconcile_interval_s=5.0, heartbeat_interval_s=30.0,
        )  # fmt: skip
        w: Watcher[Any, Any] = Watcher(store, decode=decode_body, settings=settings)
        w.add_listener(on_change)
        await w.start()
        watchers.append(w)
    out.write("ready\n")
    out.flush()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until parent closes
    for w in watchers:
        await w.stop()
        await w.store.redis.aclose()
    if os.environ.get("BENCH_CPU"):
        import resource

        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(f"worker cpu user={ru.ru_utime:.2f}s sys={ru.ru_stime:.2f}s", file=sys.stderr)


# -- parent -----------------------------------------------------------------------------


async def run_case(url: str, k: int, size: int, publishes: int, procs: int) -> dict[str, Any]:
    store = Store(connect(url), NAMESPACE)
    await store.redis.flushdb()  # our own redis-server, started by this script
    per = [k // procs + (1 if i < k % procs else 0) for i in range(procs)]
    per = [n for n in per if n]
    children = []
    arrivals: dict[int, list[float]] = {}
    done: dict[int, asyncio.Event] = {}

    async def read(proc: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            text = line.decode().strip()
            if text == "ready":
                ready.set()
                continue
            version, ts = text.split()
            v = int(version)
            arrivals.setdefault(v, []).append(float(ts))
            if len(arrivals[v]) == len(per):
                done.setdefault(v, asyncio.Event()).set()

    readers = []
    for n in per:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", url, str(n),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, **child_options(),
        )  # fmt: skip
        ready = asyncio.Event()
        readers.append(asyncio.create_task(read(proc, ready)))
        children.append(proc)
        await asyncio.wait_for(ready.wait(), 60)

    base = document(size)
    latencies = []
    warmup = 5
    try:
        for i in range(publishes + warmup):
            body = numbered(base, i + 1)
            t0 = time.monotonic()
            result = await store.publish(body)
            ev = done.setdefault(result.version, asyncio.Event())
            await asyncio.wait_for(ev.wait(), 60)
            if i >= warmup:
                latencies.append((max(arrivals[result.version]) - t0) * 1000)
    finally:
        for proc in children:  # a closed stdin is the workers' cue to exit
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in children:
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                signal_tree(proc.pid, signal.SIGKILL)
                await proc.wait()
        for r in readers:
            r.cancel()
        await store.redis.aclose()
    latencies.sort()
    return {
        "watchers": k,
        "processes": len(per),
        "doc_bytes": len(base),
        "publishes": len(latencies),
        "p50_ms": round(statistics.median(latencies), 3),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 3),
        "max_ms": round(latencies[-1], 3),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    with LocalRedis() as redis_server:
        for size in args.sizes:
            for k in args.ks:
                procs = min(k, args.processes)
                res = await run_case(redis_server.url, k, size, args.publishes, procs)
                print(json.dumps(res), file=sys.stderr)
                results.append(res)
    return {
        "benchmark": "propagation",
        "what": "ms from publish() call to the moment the last of K watchers swapped it in",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "results": results,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        import uvloop

        uvloop.run(worker(sys.argv[2], int(sys.argv[3])))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p.add_argument("--ks", type=ints, default=[1, 20, 100], help="watcher counts")
    p.add_argument("--sizes", type=ints, default=[10_000, 1_000_000], help="document bytes")
    p.add_argument("--publishes", type=int, default=200)
    p.add_argument(
        "--processes", type=int, default=os.cpu_count() or 2, help="worker processes (at most)"
    )
    args = p.parse_args()
    import uvloop

    print(json.dumps(uvloop.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
