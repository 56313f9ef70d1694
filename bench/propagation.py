"""Propagation latency: from a publish to "all K watchers applied it", beside a floor.

Starts its own redis-server, runs K watchers spread over several processes, publishes
N versions one after another (each waits until every watcher applied the previous one)
and prints JSON with p50 / p99 / max milliseconds per document size and K.

    python bench/propagation.py [--ks 20,100,1000] [--publishes 200,200,50] [--sizes 10000]
                                [--modes floor,bus] [--rollouts 5]

Two modes run with the same K, processes and document, one after the other:

- `floor`: the least any bus could do. K subscribers, each on its own connection; the
  publisher SETs the body and PUBLISHes the version; each subscriber GETs the body and
  decodes it into the typed document (msgspec, no semantic checks). No status, no checksum.
- `bus`: K configbus watchers doing the full replica work (learn the target, fetch or take
  the hinted body, checksum, signature, strict decode, swap, status report). The bench
  signs what it publishes as an admin does, so the watchers skip the semantic checks the
  admin ran (`configbus.signing`); an unsigned record costs them those checks too.

Per case it also reports what an apply costs: Redis commands and microseconds per apply
from INFO commandstats (commands run inside a Lua script are counted by Redis both on
their own and inside the script's time, so `cmd_usec` is an upper bound; SLOWLOG, logging
every command during the measured window, tells which ran inside a script, and
`cmd_usec_per_apply_scripts_once` counts those once; that time split in two: the
publisher's own per publish, `cmd_usec_per_publish`, and what each apply adds,
`cmd_usec_per_apply_marginal`: its reads, its status reports and its copy of the published
message), Redis process CPU per apply (INFO cpu: includes socket writes and pub/sub
fan-out, which commandstats does not see), and the worker processes' CPU per apply. Everything in the measured window
counts: reconcile ticks, status reports, the publisher's own commands.

With `--rollouts R`, the bus mode also runs R rounds of rollout steps (start a rollout whose
stage selects half the watchers by label, abort it; start another and promote it) and
reports how fast each step reaches the replicas it moves, beside the publishes.

Each worker process, in both modes, runs with a replica's garbage-collector policy
(`proxy.gc_policy`: its startup heap frozen once its watchers are up), as a replica does.

Timestamps are CLOCK_MONOTONIC (`time.monotonic`), which every process on the machine shares.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import signal
import statistics
import sys
import time
from typing import Any

import msgspec

# Run as a script (`python bench/propagation.py`, as `make bench` does) or as a module.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.propagation_worker import FLOOR_CHANNEL, FLOOR_KEY, NAMESPACE, SIGNER, run_worker
from configbus import lua
from configbus.codec import canonical, sha256_hex
from configbus.connection import connect
from configbus.rollout import Rollout, RolloutState, Selector, Stage
from configbus.rollout_store import RolloutStore
from configbus.store import Store
from configbus.tooling.localredis import LocalRedis
from configbus.tooling.procs import child_options, signal_tree
from configbus.validation import to_document

WARMUP = 5
SETTLE_S = 1.0  # after the last apply, before the counters are read: late status reports


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


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(len(s) * q))], 3)


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(values), 3),
        "p99_ms": pct(values, 0.99),
        "max_ms": round(max(values), 3),
    }


class Fleet:
    """The worker processes of one case, and what they report: `(version, group, nth)`
    arrives once per process when all its watchers of that group applied that version for
    the nth time."""

    def __init__(self, mode: str, url: str, per: list[int]) -> None:
        self.mode, self.url, self.per = mode, url, per
        self.procs: list[asyncio.subprocess.Process] = []
        self.readers: list[asyncio.Task[None]] = []
        self.arrivals: dict[tuple[int, str, int], list[float]] = {}
        self.events: dict[tuple[int, str, int], asyncio.Event] = {}
        self.cpu: asyncio.Queue[float] = asyncio.Queue()
        self.groups: dict[str, int] = {}  # group → processes that have watchers in it

    async def start(self) -> None:
        first = 0
        for n in self.per:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.propagation", "--worker", self.mode, self.url,
                str(n), str(first),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, **child_options(),
            )  # fmt: skip
            for g, count in (("a", (n + 1 - first % 2) // 2), ("b", (n + first % 2) // 2)):
                if count:
                    self.groups[g] = self.groups.get(g, 0) + 1
            first += n
            ready = asyncio.Event()
            self.readers.append(asyncio.create_task(self._read(proc, ready)))
            self.procs.append(proc)
            await asyncio.wait_for(ready.wait(), 120)

    async def _read(self, proc: asyncio.subprocess.Process, ready: asyncio.Event) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            parts = line.decode().split()
            if parts == ["ready"]:
                ready.set()
            elif parts[0] == "cpu":
                self.cpu.put_nowait(float(parts[1]))
            else:
                key = (int(parts[0]), parts[1], int(parts[2]))
                got = self.arrivals.setdefault(key, [])
                got.append(float(parts[3]))
                if len(got) == self.groups[key[1]]:
                    self.event(key).set()

    def event(self, key: tuple[int, str, int]) -> asyncio.Event:
        return self.events.setdefault(key, asyncio.Event())

    async def reached(self, t0: float, *keys: tuple[int, str, int]) -> float:
        """ms from t0 until every process reported every key."""
        for key in keys:
            await asyncio.wait_for(self.event(key).wait(), 120)
        return (max(max(self.arrivals[k]) for k in keys) - t0) * 1000

    async def cpu_s(self) -> float:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(b"cpu\n")
        return sum([await asyncio.wait_for(self.cpu.get(), 30) for _ in self.procs])

    async def stop(self) -> None:
        for proc in self.procs:  # a closed stdin is the workers' cue to exit
            assert proc.stdin is not None
            proc.stdin.close()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 60)
            except TimeoutError:
                signal_tree(proc.pid, signal.SIGKILL)
                await proc.wait()
        for r in self.readers:
            r.cancel()


# Commands a Lua script runs are logged by SLOWLOG under the script's own pseudo-client.
SCRIPT_CLIENT = b"?:0"
PUBLISH_SHA = hashlib.sha1(lua.PUBLISH.encode()).hexdigest()  # what EVALSHA names it by


async def log_every_command(store: Store) -> None:
    """SLOWLOG every command from now on (this script's own redis-server), so that the
    commands run inside scripts can be told apart from those clients sent (`slowlog_split`)."""
    await store.redis.config_set("slowlog-log-slower-than", 0)
    await store.redis.config_set("slowlog-max-len", 4_000_000)
    await store.redis.slowlog_reset()


class Split(msgspec.Struct, frozen=True):
    """What SLOWLOG tells of the measured window, in microseconds of command time."""

    inner: int  # commands scripts ran: commandstats counts them again in the script's figure
    publisher: int  # the publisher's own work, without the copy of each message to the
    # subscribers (the fan-out grows with K, as reads would: it is the appliers' share)


async def slowlog_split(store: Store, publish_sha: str) -> Split:
    """Split the commands logged since `log_every_command`; logging is switched off again.
    The publisher's commands: the publish script (bus) or SET of the body (floor); the
    fan-out: PUBLISH, run by that script (bus) or sent by the publisher (floor)."""
    await store.redis.config_set("slowlog-log-slower-than", -1)
    entries = await store.redis.execute_command("SLOWLOG", "GET", -1, NEVER_DECODE=True)
    await store.redis.slowlog_reset()
    inner = publisher = 0
    sha, floor_key = publish_sha.encode(), FLOOR_KEY.encode()
    for e in entries:
        usec, args, client = int(e[2]), e[3], e[4] if len(e) > 4 else b""
        cmd, first = args[0].lower(), (args[1] if len(args) > 1 else b"")
        if client == SCRIPT_CLIENT:
            inner += usec
            if cmd == b"publish":
                publisher -= usec  # counted in the script's time: the appliers' share
        elif (cmd == b"evalsha" and first == sha) or (cmd == b"set" and first == floor_key):
            publisher += usec
    return Split(inner=inner, publisher=publisher)


async def redis_counters(store: Store) -> tuple[dict[str, tuple[int, int]], float]:
    stats = await store.redis.info("commandstats")
    cmds = {
        name.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for name, v in stats.items()
    }
    cpu = await store.redis.info("cpu")
    return cmds, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def costs(
    before: tuple[dict[str, tuple[int, int]], float],
    after: tuple[dict[str, tuple[int, int]], float],
    applies: int,
    worker_cpu_s: float,
    split: Split,
    publishes: int,
) -> dict[str, Any]:
    # The bench's own reads of the counters and its logging switches.
    skip = {"config|resetstat", "config|set", "info", "slowlog|reset", "slowlog|get"}
    calls = {n: c - before[0].get(n, (0, 0))[0] for n, (c, _) in after[0].items() if n not in skip}
    usec = {n: u - before[0].get(n, (0, 0))[1] for n, (_, u) in after[0].items() if n not in skip}
    per = {n: round(c / applies, 3) for n, c in sorted(calls.items()) if c}
    per_usec = {n: round(u / applies, 2) for n, u in sorted(usec.items()) if calls[n]}
    return {
        "applies": applies,
        "redis_calls_per_apply": per,
        "redis_usec_per_apply": per_usec,
        "redis_cmd_usec_per_apply": round(sum(usec.values()) / applies, 2),
        # The same with the commands scripts ran counted once (inside their script's time).
        "redis_cmd_usec_per_apply_scripts_once": round(
            (sum(usec.values()) - split.inner) / applies, 2
        ),
        # Redis time of a publish wave is about `per_publish + K * marginal`: the publisher's
        # own work once, then what each apply adds (its reads and reports, its copy of the
        # message), script commands counted once.
        "redis_cmd_usec_per_publish": round(split.publisher / publishes, 1),
        "redis_cmd_usec_per_apply_marginal": round(
            (sum(usec.values()) - split.inner - split.publisher) / applies, 2
        ),
        "redis_cpu_usec_per_apply": round((after[1] - before[1]) * 1e6 / applies, 2),
        "worker_cpu_usec_per_apply": round(worker_cpu_s * 1e6 / applies, 2),
    }


async def run_case(
    url: str, mode: str, k: int, size: int, publishes: int, procs: int, rollouts: int
) -> dict[str, Any]:
    store = Store(connect(url), NAMESPACE)
    await store.redis.flushdb()  # our own redis-server, started by this script
    per = [k // procs + (1 if i < k % procs else 0) for i in range(procs)]
    fleet = Fleet(mode, url, [n for n in per if n])
    await fleet.start()
    groups = list(fleet.groups)
    base = document(size)
    latencies: list[float] = []
    nth: dict[tuple[int, str], int] = {}

    def expect(version: int, *gs: str) -> list[tuple[int, str, int]]:
        out = []
        for g in gs:
            n = nth[(version, g)] = nth.get((version, g), 0) + 1
            out.append((version, g, n))
        return out

    async def publish(n: int) -> float:
        body = numbered(base, n)
        t0 = time.monotonic()
        if mode == "floor":
            await store.redis.set(FLOOR_KEY, body)
            await store.redis.publish(FLOOR_CHANNEL, str(n))
            version = n
        else:
            version = (await store.publish(body, sig=SIGNER.sign(sha256_hex(body)))).version
        return await fleet.reached(t0, *expect(version, *groups))

    try:
        for i in range(WARMUP):
            await publish(i + 1)
        await log_every_command(store)
        await store.redis.config_resetstat()
        before = await redis_counters(store)
        cpu0 = await fleet.cpu_s()
        for i in range(publishes):
            latencies.append(await publish(WARMUP + i + 1))
        await asyncio.sleep(SETTLE_S)
        after = await redis_counters(store)
        cpu1 = await fleet.cpu_s()
        split = await slowlog_split(store, PUBLISH_SHA)
        steps = await rollout_rounds(store, fleet, base, rollouts, expect) if mode == "bus" else {}
    finally:
        await fleet.stop()
        await store.redis.aclose()
    return {
        "mode": mode,
        "watchers": k,
        "processes": len(fleet.procs),
        "doc_bytes": len(base),
        **summary(latencies),
        **costs(before, after, k * publishes, cpu1 - cpu0, split, publishes),
        **({"rollout_steps": steps} if steps else {}),
    }


async def rollout_rounds(
    store: Store, fleet: Fleet, base: bytes, rounds: int, expect: Any
) -> dict[str, dict[str, float]]:
    """Each round: start (stage = watchers labelled half=a), abort; start, promote."""
    rs = RolloutStore(store)
    out: dict[str, list[float]] = {"start": [], "abort": [], "promote": []}
    stage = Stage(selector=Selector(labels={"half": "a"}), bake_s=0)
    n = 1_000_000
    for _ in range(rounds):
        for end in ("abort", "promote"):
            n += 1
            now = time.time()
            new = Rollout(
                id=f"bench-{n}", version=0, sha256="", epoch="", base=0, stages=(stage,),
                started_at=now, stage_started_at=now,
            )  # fmt: skip
            head = (await store.head()).version
            t0 = time.monotonic()
            b = numbered(base, n)
            version = (await store.publish(b, rollout=new, sig=SIGNER.sign(sha256_hex(b)))).version
            out["start"].append(await fleet.reached(t0, *expect(version, "a")))
            running = await rs.get()
            assert running is not None
            state = RolloutState.ABORTED if end == "abort" else RolloutState.PROMOTED
            done = msgspec.structs.replace(running, state=state)
            t0 = time.monotonic()
            await rs.step(end, done, expected_stage=0)  # type: ignore[arg-type]
            moved = expect(head, "a") if end == "abort" else expect(version, "b")
            out[end].append(await fleet.reached(t0, *moved))
    return {step: summary(v) for step, v in out.items()}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    with LocalRedis(extra_args=["--maxclients", "20000"]) as redis_server:
        for size in args.sizes:
            for k, publishes in zip(args.ks, args.publishes, strict=True):
                procs = min(k, args.processes)
                row: dict[str, Any] = {"watchers": k, "doc_bytes": size}
                for mode in args.modes:
                    rollouts = args.rollouts if mode == "bus" else 0
                    res = await run_case(
                        redis_server.url, mode, k, size, publishes, procs, rollouts
                    )
                    print(json.dumps(res), file=sys.stderr, flush=True)
                    row[mode] = res
                if "floor" in row and "bus" in row:
                    row["p99_vs_floor"] = round(row["bus"]["p99_ms"] / row["floor"]["p99_ms"], 2)
                    row["p50_vs_floor"] = round(row["bus"]["p50_ms"] / row["floor"]["p50_ms"], 2)
                results.append(row)
    return {
        "benchmark": "propagation",
        "what": "ms from the publish call to the moment the last of K watchers swapped it in",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_at_end": os.getloadavg(),
        },
        "results": results,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        import uvloop

        mode, url, count, first = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        uvloop.run(run_worker(mode, url, count, first))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p.add_argument("--ks", type=ints, default=[20, 100, 1000], help="watcher counts")
    p.add_argument("--sizes", type=ints, default=[10_000], help="document bytes")
    # p99 of 50 samples is their maximum, one stall; where publishes are cheap, take more.
    p.add_argument(
        "--publishes",
        type=ints,
        default=None,
        help="publishes per K: one number for every K, or one per K (default 200 up to "
        "K = 100, else 50)",
    )
    p.add_argument("--modes", type=lambda s: s.split(","), default=["floor", "bus"])
    p.add_argument("--rollouts", type=int, default=5, help="rollout rounds per bus case")
    p.add_argument(
        "--processes", type=int, default=os.cpu_count() or 2, help="worker processes (at most)"
    )
    args = p.parse_args()
    if args.publishes is None:
        args.publishes = [200 if k <= 100 else 50 for k in args.ks]
    elif len(args.publishes) == 1:
        args.publishes *= len(args.ks)
    elif len(args.publishes) != len(args.ks):
        p.error(f"--publishes: {len(args.publishes)} numbers for {len(args.ks)} values of --ks")
    import uvloop

    print(json.dumps(uvloop.run(main_async(args)), indent=2))


if __name__ == "__main__":
    main()
