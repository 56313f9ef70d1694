"""The key collection at scale: propagation of one key change, cold start, memory, and
whether a document publish notices the collection's size.

Starts its own redis-server, fills the collection with N keys (default 100,000), starts K
replica-like watchers (default 20, over two processes), each a `Watcher` following the
document with a `KeyFollower` on the same subscription, exactly as a replica runs them.
Then it creates and revokes keys one at a time (each waits until all K hold the change)
and publishes documents the same way, and prints JSON:

- `key_change`: ms from the change script's return to "all K hold it" (p50/p99/max), the
  Redis bytes sent per replica per change (INFO stats `total_net_output_bytes` over the
  window / (changes x K): an upper bound, it includes the bench's own replies) and how many
  log reads the followers needed (0 when every hint carried its change);
- `cold_start`: one follower loading the N keys in this process: seconds and the memory
  it holds (RSS growth, after a collection);
- `publish_empty` / `publish_full`: a 10 KB document reaching all K, with an empty
  collection and with N keys.

    python bench/keys.py [--keys 100000] [--watchers 20] [--changes 200] [--publishes 50]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import secrets
import signal
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configbus.codec import canonical
from configbus.connection import connect
from configbus.keyset import KeyFollower
from configbus.keystore import KeyStore
from configbus.store import Store
from configbus.testing import sample_data
from configbus.tooling.localredis import LocalRedis
from configbus.tooling.procs import child_options, signal_tree
from configbus.validation import to_document

NAMESPACE = "bench-keys"


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(len(s) * q))], 3)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 3),
        "p99_ms": pct(values, 0.99),
        "max_ms": round(max(values), 3),
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def document(n: int, pad: int = 9000) -> bytes:
    data = sample_data()
    data["providers"][0].pop("api_key", None)
    data["metadata"] = {"n": n, "pad": "x" * pad}
    return canonical(to_document(data))


async def fill(keys: KeyStore, n: int) -> None:
    """N keys through the change script, pipelined (each still one atomic change)."""
    from configbus.clientkeys import ClientKey, entry_json

    now = time.time()
    script = keys._change
    done = 0
    while done < n:
        pipe = keys.redis.pipeline(transaction=False)
        for i in range(done, min(n, done + 2000)):
            e = ClientKey(
                id=f"key_{i:08d}", name=f"dev-{i}", key_sha256=secrets.token_hex(32),
                team=f"team-{i % 50}", tags=("bench",), metadata={"owner": f"u{i}"},
                rate_limit=None, created_at=now, updated_at=now,
            )  # fmt: skip
            k, a = keys.change_call(
                e.id, "", entry_json(e), (e.key_sha256,), (), "bench", "key.create"
            )
            await script(keys=k, args=a, client=pipe)
        await pipe.execute()
        done = min(n, done + 2000)


# -- the worker processes ---------------------------------------------------------------


async def worker(url: str, count: int) -> None:
    from configbus.llm import document_decoder
    from configbus.settings import BusSettings
    from configbus.watcher import Watcher

    watchers = []
    for i in range(count):
        redis = connect(url)
        follower = KeyFollower(KeyStore(redis, NAMESPACE), reconcile_interval_s=30)
        w: Watcher[Any, Any] = Watcher(
            Store(redis, NAMESPACE),
            decode=document_decoder(None),
            settings=BusSettings(namespace=NAMESPACE, replica_id=f"w{os.getpid()}-{i}"),
            keys=follower,
        )

        def on_keys(f: KeyFollower = follower, wake: Any = w.reporter.wake) -> None:
            wake()
            print(f"k {f.table.rev} {time.monotonic():.9f}", flush=True)

        follower.on_change = on_keys
        w.add_listener(
            lambda new, old: print(f"d {new.version} {time.monotonic():.9f}", flush=True)
        )
        t0 = time.perf_counter()
        await w.start()
        print(f"loaded {time.perf_counter() - t0:.3f}", flush=True)
        watchers.append(w)
    while not all(w.subscribed for w in watchers):  # noqa: ASYNC110 - a flag, no event
        await asyncio.sleep(0.01)
    print(f"ready {sum(w.keys.reads for w in watchers if w.keys)}", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        if line.strip() == "reads":
            print(f"reads {sum(w.keys.reads for w in watchers if w.keys)}", flush=True)
    for w in watchers:
        await w.stop()


class Fleet:
    def __init__(self, url: str, per: list[int]) -> None:
        self.url, self.per = url, per
        self.procs: list[asyncio.subprocess.Process] = []
        self.readers: list[asyncio.Task[None]] = []
        self.arrivals: dict[tuple[str, int], list[float]] = {}
        self.events: dict[tuple[str, int], asyncio.Event] = {}
        self.loads: list[float] = []
        self.reads: asyncio.Queue[int] = asyncio.Queue()
        self.k = sum(per)

    async def start(self) -> None:
        for n in self.per:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.keys", "--worker", self.url, str(n),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, **child_options(),
            )  # fmt: skip
            ready = asyncio.Event()
            self.readers.append(asyncio.create_task(self._read(proc, ready)))
            self.procs.append(proc)
            await asyncio.wait_for(ready.wait(), 600)

    async def _read(self, proc: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            kind, *rest = line.decode().split()
            if kind == "ready":
                ready.set()
            elif kind == "loaded":
                self.loads.append(float(rest[0]))
            elif kind == "reads":
                self.reads.put_nowait(int(rest[0]))
            else:
                key = (kind, int(rest[0]))
                got = self.arrivals.setdefault(key, [])
                got.append(float(rest[1]))
                if len(got) == self.k:
                    self.event(key).set()

    def event(self, key: tuple[str, int]) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())

    async def reached(self, t0: float, key: tuple[str, int]) -> float:
        await asyncio.wait_for(self.event(key).wait(), 60)
        return (max(self.arrivals[key]) - t0) * 1000

    async def total_reads(self) -> int:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(b"reads\n")
        return sum([await asyncio.wait_for(self.reads.get(), 30) for _ in self.procs])

    async def stop(self) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.close()
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), 60)
            except TimeoutError:
                signal_tree(p.pid, signal.SIGKILL)
                await p.wait()


async def publishes(store: Store, fleet: Fleet, n: int) -> list[float]:
    out = []
    for i in range(n):
        body = document(int(time.time() * 1e6) + i)
        t0 = time.monotonic()
        r = await store.publish(body, author="bench")
        out.append(await fleet.reached(t0, ("d", r.version)))
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    per = [args.watchers // 2, args.watchers - args.watchers // 2]
    with LocalRedis() as server:
        redis = connect(server.url)
        keys = KeyStore(redis, NAMESPACE)
        store = Store(redis, NAMESPACE)
        await store.publish(document(0), author="bench")
        out: dict[str, Any] = {
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "keys": args.keys,
            "watchers": args.watchers,
        }

        # A document publish with an empty collection, as the baseline.
        fleet = Fleet(server.url, per)
        await fleet.start()
        out["publish_empty"] = summary((await publishes(store, fleet, args.publishes))[5:])
        await fleet.stop()

        t0 = time.perf_counter()
        await fill(keys, args.keys)
        out["fill_s"] = round(time.perf_counter() - t0, 2)

        # Cold start of one follower, here (the memory it holds is this process's growth).
        gc.collect()
        before = rss_bytes()
        follower = KeyFollower(KeyStore(connect(server.url), NAMESPACE))
        t0 = time.perf_counter()
        await follower.start()
        cold = time.perf_counter() - t0
        gc.collect()
        out["cold_start"] = {
            "seconds": round(cold, 3),
            "keys": len(follower.table),
            "memory_mb": round((rss_bytes() - before) / 2**20, 1),
        }
        await follower.stop()
        del follower
        gc.collect()

        fleet = Fleet(server.url, per)
        await fleet.start()
        out["watcher_load_s"] = summary([x * 1000 for x in fleet.loads]) | {
            "unit": "ms per watcher, 10 loading at once per process"
        }
        reads0 = await fleet.total_reads()
        net0 = int((await redis.info("stats"))["total_net_output_bytes"])
        times = []
        made: list[str] = []
        for i in range(args.changes):
            t0 = time.monotonic()
            if i % 2 == 0 or not made:
                e, _ = await keys.create(name=f"new-{i}", team="bench", actor="bench")
                made.append(e.id)
                rev = e.revision
            else:
                rev = await keys.revoke(made.pop(), actor="bench")
            times.append(await fleet.reached(t0, ("k", rev)))
        net1 = int((await redis.info("stats"))["total_net_output_bytes"])
        reads = await fleet.total_reads() - reads0
        out["key_change"] = summary(times) | {
            "redis_bytes_per_replica_per_change": round(
                (net1 - net0) / (args.changes * args.watchers)
            ),
            "log_reads": reads,
        }
        out["publish_full"] = summary((await publishes(store, fleet, args.publishes))[5:])
        await fleet.stop()
        await redis.aclose()
    return out


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        asyncio.run(worker(sys.argv[2], int(sys.argv[3])))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--watchers", type=int, default=20)
    ap.add_argument("--changes", type=int, default=200)
    ap.add_argument("--publishes", type=int, default=50)
    args = ap.parse_args()
    print(json.dumps(asyncio.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
