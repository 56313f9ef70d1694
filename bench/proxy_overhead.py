"""What the proxy replica costs: wrk against the mock upstream directly, through a bare
aiohttp pass-through, and through one replica (auth, routing, metrics, and every kind of
limit on: global, key, model, provider, per-IP and IP allow/deny, each by requests and by
tokens, fleet-wide), at several concurrencies; then a 200-chunk streamed answer, direct and
through the replica (added time to first byte, relay cost per chunk); then through the
replica while a new version is published every 100 ms. Prints one JSON object.

    .venv/bin/python bench/proxy_overhead.py [--duration 5] [--concurrency 1,16,64]
    .venv/bin/python bench/proxy_overhead.py --cache-hit [--duration 5]

`--cache-hit` measures only what a response-cache hit costs at c=1: the same request to a
model whose answers are cached (every request after the first is a hit: one Redis GET, no
upstream) beside the mock direct and the replica forwarding it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from configbus.connection import connect
from configbus.store import Store
from configbus.testing import SAMPLE_CLIENT_KEY
from tests.proxy.helpers import SECRET_KEY, encode
from tests.support import RedisServer, Service, configbus_cmd, free_port

ROOT = Path(__file__).resolve().parent.parent
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello there"}]})
NAMESPACE = "bench"
TICKS = os.sysconf("SC_CLK_TCK")

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = %s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p99_us":%%d,"mean_us":%%f,' ..
    '"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def wrk(url: str, script: Path, conns: int, duration: float, pid: int) -> dict[str, Any]:
    # Short warm-up (pools, JIT-free but caches), then the measured run.
    subprocess.run(
        ["wrk", "-t1", f"-c{conns}", "-d1s", "-s", str(script), url],
        capture_output=True,
        check=True,
    )
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "5s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = cpu_seconds(pid) - cpu0
    res = json.loads(out.stdout.strip().splitlines()[-1])
    n = res["requests"]
    failed = sum(res["errors"].values())
    return {
        "concurrency": conns,
        "rps": round(n / (res["duration_us"] / 1e6), 1),
        "p50_ms": res["p50_us"] / 1000,
        "p99_ms": res["p99_us"] / 1000,
        "mean_ms": round(res["mean_us"] / 1000, 3),
        "requests": n,
        "failed": failed,
        "errors": res["errors"],
        "server_cpu_us_per_req": round(cpu / n * 1e6, 1) if n else None,
    }


STREAM_CHUNKS = 200
# Limits far above what the machine can do: every request goes through each one (fleet-wide
# leases, token estimates and usage corrections) and none refuses.
HUGE = {"rpm": 10_000_000, "tpm": 10_000_000_000}


def bench_data(
    upstream: str, rev: int, stream_upstream: str | None = None, *, limits: bool = True
) -> dict[str, Any]:

    stream_upstream = stream_upstream or upstream
    data = _bench_data(upstream, rev, stream_upstream)
    if not limits:  # the document of a replica before fleet limits: one rpm on the key
        del data["rate_limits"], data["ip_rules"]
        for section in ("providers", "models"):
            for item in data[section]:
                item.pop("rate_limit", None)
        data["clients"][0]["rate_limit"] = {"rpm": 10_000_000}
    return data


def _bench_data(upstream: str, rev: int, stream_upstream: str) -> dict[str, Any]:
    from configbus.testing import key_sha256

    return {
        "providers": [
            {
                "name": "up",
                "type": "openai",
                "base_url": upstream + "/v1",
                "api_key": {"secret": "sk-bench"},
                "max_retries": 1,
                "pool": {"max_connections": 256},
                "rate_limit": HUGE,
            },
            {
                "name": "streamer",
                "type": "openai",
                "base_url": stream_upstream + "/v1",
                "rate_limit": HUGE,
            },
        ],
        "models": [
            {
                "name": "m",
                "deployments": [{"provider": "up", "model": "mock"}],
                "params": {"temperature": 0.5},
                "rate_limit": HUGE,
            },
            {"name": "s", "deployments": [{"provider": "streamer", "model": "mock"}]},
            {
                "name": "cached",
                "deployments": [{"provider": "up", "model": "mock"}],
                "params": {"temperature": 0.5},
                "cache": {"ttl_s": 3600},
            },
        ],
        "rate_limits": {"global": HUGE, "model_default": HUGE},
        "ip_rules": {
            "allow": ["127.0.0.0/8", "::1/128"],
            "deny": ["10.0.0.0/8", "2001:db8::/32"],
            "trusted_proxies": ["192.0.2.0/24"],
            "rate_limit": HUGE,
        },
        "clients": [
            {
                "name": "bench",
                "key_sha256": key_sha256(SAMPLE_CLIENT_KEY),
                "models": ["*"],
                "rate_limit": HUGE,
            }
        ],
        "metadata": {"rev": rev},
    }


def stream_once(sock: socket.socket, request: bytes) -> tuple[float, float]:
    """(seconds to the first event, seconds to the end) of one streamed answer."""
    t0 = time.perf_counter()
    sock.sendall(request)
    first = 0.0
    seen = b""
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("stream closed early")
        if not first and b"data:" in seen[-8:] + data:
            first = time.perf_counter() - t0
        seen = seen[-16:] + data
        if b"[DONE]" in seen and seen.endswith(b"0\r\n\r\n"):
            return first, time.perf_counter() - t0


def stream_bench(port: int, n: int, pid: int) -> dict[str, Any]:
    """`n` streamed answers of STREAM_CHUNKS chunks, one at a time, over one connection."""
    body = json.dumps({**json.loads(BODY), "model": "s", "stream": True}).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
        b"Content-Type: application/json\r\n"
        + f"Authorization: Bearer {SAMPLE_CLIENT_KEY}\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(20):
            stream_once(sock, request)
        cpu0 = cpu_seconds(pid)
        runs = [stream_once(sock, request) for _ in range(n)]
        cpu = cpu_seconds(pid) - cpu0
    return {
        "streams": n,
        "chunks": STREAM_CHUNKS,
        "ttfb_p50_ms": round(statistics.median(r[0] for r in runs) * 1000, 3),
        "total_p50_ms": round(statistics.median(r[1] for r in runs) * 1000, 3),
        "server_cpu_us_per_stream": round(cpu / n * 1e6, 1),
    }


class Publisher:
    """Publishes a new version every `interval` seconds in a thread of its own."""

    _revs = itertools.count(1000)

    def __init__(
        self,
        redis_url: str,
        upstream: str,
        interval: float,
        duration: float,
        stream_upstream: str | None = None,
        *,
        limits: bool = True,
    ) -> None:
        self.redis_url, self.interval = redis_url, interval
        # Bodies made (and secrets encrypted) before the run, so the publisher's own CPU
        # does not compete with the replica while it is measured.
        n = int(duration / interval) + 30
        self.bodies = [
            encode(bench_data(upstream, next(self._revs), stream_upstream, limits=limits))
            for _ in range(n)
        ]
        self.count = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    async def _run(self) -> None:
        try:
            await self._publish_loop()
        except Exception as exc:  # reported in the results, not as a thread traceback
            self.error = repr(exc)

    async def _publish_loop(self) -> None:
        redis = connect(self.redis_url)
        store = Store(redis, NAMESPACE)
        next_at = time.monotonic()
        while not self._stop.is_set() and self.count < len(self.bodies):
            await store.publish(self.bodies[self.count], author="bench")
            self.count += 1
            next_at += self.interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await redis.aclose()

    def __enter__(self) -> Publisher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--reload-concurrency", default="16,64")
    ap.add_argument("--rounds", type=int, default=3, help="reload vs quiet rounds")
    ap.add_argument("--streams", type=int, default=300, help="streamed answers measured")
    ap.add_argument("--interleave", type=int, default=3, help="runs per target, interleaved")
    ap.add_argument(
        "--no-limits",
        action="store_true",
        help="only a key rpm (the document a replica before fleet limits understands)",
    )
    ap.add_argument(
        "--tracing",
        action="store_true",
        help="also a second replica tracing every request (bench/traced_proxy.py)",
    )
    ap.add_argument(
        "--cache-hit", action="store_true", help="only the cost of a response-cache hit at c=1"
    )
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found (apt-get install -y wrk)", file=sys.stderr)
        return 2
    conc = [int(c) for c in args.concurrency.split(",")]
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(WRK_SCRIPT % (json.dumps(BODY), SAMPLE_CLIENT_KEY))
    py = sys.executable
    redis = RedisServer().start()
    mport, pport, rport, sport = free_port(), free_port(), free_port(), free_port()
    tport = free_port()
    mock_url = f"http://127.0.0.1:{mport}"
    stream_url = f"http://127.0.0.1:{sport}"
    mock = Service(configbus_cmd("mock-upstream", "--port", str(mport), "--name", "A"))
    stream_mock = Service(configbus_cmd("mock-upstream", "--port", str(sport), "--name", "S"))
    passthrough = Service([py, str(ROOT / "bench" / "passthrough.py"), mock_url, str(pport)])
    replica = Service(
        configbus_cmd("proxy", "--port", str(rport)),
        env={
            "CONFIGBUS_REDIS_URL": redis.url,
            "CONFIGBUS_NAMESPACE": NAMESPACE,
            "CONFIGBUS_SECRET_KEYS": SECRET_KEY,
            "CONFIGBUS_REPLICA_ID": "bench",
        },
    )
    replica_env = {
        "CONFIGBUS_REDIS_URL": redis.url,
        "CONFIGBUS_NAMESPACE": NAMESPACE,
        "CONFIGBUS_SECRET_KEYS": SECRET_KEY,
        "CONFIGBUS_REPLICA_ID": "bench-traced",
    }
    traced = Service([py, str(ROOT / "bench" / "traced_proxy.py"), str(tport)], env=replica_env)
    results: dict[str, Any] = {
        "duration_s": args.duration,
        "cpus": os.cpu_count(),
        "limits": "key rpm only" if args.no_limits else "all kinds, rpm and tpm",
        "load_before": os.getloadavg(),
    }
    try:
        for s in (mock, stream_mock, passthrough, replica, *([traced] if args.tracing else [])):
            s.start()
        mock.wait_http(mock_url + "/_stats")
        stream_mock.wait_http(stream_url + "/_stats")
        subprocess.run(
            ["curl", "-s", "-X", "POST", stream_url + "/_control", "-d",
             json.dumps({"stream_chunks": STREAM_CHUNKS})],
            capture_output=True, check=True,
        )  # fmt: skip
        replica.wait_http(f"http://127.0.0.1:{rport}/health/live")

        async def seed() -> None:
            r = connect(redis.url)
            doc = encode(bench_data(mock_url, 1, stream_url, limits=not args.no_limits))
            await Store(r, NAMESPACE).publish(doc, author="bench")
            await r.aclose()

        asyncio.run(seed())
        replica.wait_http(f"http://127.0.0.1:{rport}/health/ready")
        passthrough.wait_http(f"http://127.0.0.1:{pport}/v1/chat/completions", status=405)
        if args.cache_hit:
            assert replica.proc is not None and mock.proc is not None
            results["cache_hit_c1"] = cache_hit_bench(
                f"http://127.0.0.1:{rport}", mock_url, script, args, replica.proc.pid,
                mock.proc.pid,
            )  # fmt: skip
            return 0
        targets = {
            "direct": (mock_url, mock),
            "passthrough": (f"http://127.0.0.1:{pport}", passthrough),
            "replica": (f"http://127.0.0.1:{rport}", replica),
        }
        if args.tracing:
            traced.wait_http(f"http://127.0.0.1:{tport}/health/ready")
            targets["replica_traced"] = (f"http://127.0.0.1:{tport}", traced)
        # Targets interleaved, `--interleave` times: each comparison sees the same machine
        # noise; the run with the median req/s of each target is reported, with the spread.
        runs: dict[str, dict[int, list[dict[str, Any]]]] = {
            n: {c: [] for c in conc} for n in targets
        }
        for c in conc:
            for _ in range(args.interleave):
                for name, (base, svc) in targets.items():
                    assert svc.proc is not None
                    url = base + "/v1/chat/completions"
                    runs[name][c].append(wrk(url, script, c, args.duration, svc.proc.pid))
        for name in targets:
            results[name] = {}
            for c in conc:
                rs = sorted(runs[name][c], key=lambda r: r["rps"])
                best = dict(rs[len(rs) // 2])
                best["rps_spread"] = [r["rps"] for r in rs]
                best["p50_ms_spread"] = sorted(r["p50_ms"] for r in rs)
                best["p50_ms"] = statistics.median(r["p50_ms"] for r in rs)
                results[name][f"c{c}"] = best
        assert replica.proc is not None and stream_mock.proc is not None
        streams = {
            "direct": stream_bench(sport, args.streams, stream_mock.proc.pid),
            "replica": stream_bench(rport, args.streams, replica.proc.pid),
        }
        sd, sr = streams["direct"], streams["replica"]
        streams["added_ttfb_p50_ms"] = round(sr["ttfb_p50_ms"] - sd["ttfb_p50_ms"], 3)
        streams["relay_us_per_chunk"] = round(
            (sr["total_p50_ms"] - sd["total_p50_ms"]) * 1000 / STREAM_CHUNKS, 2
        )
        streams["replica_cpu_us_per_chunk"] = round(
            sr["server_cpu_us_per_stream"] / STREAM_CHUNKS, 2
        )
        results["stream_200_chunks"] = streams
        # Reloads vs none, interleaved in rounds so both see the same machine noise; the
        # comparison uses the median p99 of each side.
        reload: dict[str, Any] = {}
        url = f"http://127.0.0.1:{rport}/v1/chat/completions"
        for c in [int(x) for x in args.reload_concurrency.split(",")]:
            quiet, busy = [], []
            for _ in range(args.rounds):
                quiet.append(wrk(url, script, c, args.duration, replica.proc.pid))
                with Publisher(
                    redis.url,
                    mock_url,
                    0.1,
                    args.duration + 1,
                    stream_url,
                    limits=not args.no_limits,
                ) as pub:
                    r = wrk(url, script, c, args.duration, replica.proc.pid)
                r["publishes"] = pub.count
                if pub.error:
                    r["publish_error"] = pub.error
                busy.append(r)
            reload[f"c{c}"] = {
                "median_p99_ms_without": statistics.median(r["p99_ms"] for r in quiet),
                "median_p99_ms_with": statistics.median(r["p99_ms"] for r in busy),
                "failed_with": sum(r["failed"] for r in busy),
                "publishes": sum(r["publishes"] for r in busy),
                "runs_without": quiet,
                "runs_with": busy,
            }
        results["replica_reloading_every_100ms"] = reload
        results["redis_alive_at_end"] = redis.running()
        status = json.loads(
            subprocess.run(
                ["curl", "-s", f"http://127.0.0.1:{rport}/status"], capture_output=True, text=True
            ).stdout
        )
        results["replica_final_version"] = status.get("version")
        # Every request went through the limits, none refused: the leases show it.
        results["replica_rate_limits"] = status.get("rate_limits")

        d, p, rp = results["direct"], results["passthrough"], results["replica"]
        checks: dict[str, Any] = {}
        if "c1" in d:
            over = rp["c1"]["p50_ms"] - d["c1"]["p50_ms"]
            checks["c1_p50_overhead_ms"] = round(over, 3)
            checks["c1_p50_overhead_at_most_0.3ms"] = over <= 0.3
        if "c1" in d and "replica_traced" in results:
            t = results["replica_traced"]["c1"]
            cost = t["p50_ms"] - rp["c1"]["p50_ms"]
            checks["c1_p50_tracing_cost_ms"] = round(cost, 3)
            checks["c1_p50_tracing_cost_spread_ms"] = [
                round(x - y, 3)
                for x, y in zip(t["p50_ms_spread"], rp["c1"]["p50_ms_spread"], strict=True)
            ]
            checks["c1_p50_tracing_at_most_0.1ms"] = cost <= 0.1
        if "c64" in p:
            ratio = rp["c64"]["rps"] / p["c64"]["rps"]
            checks["c64_rps_vs_passthrough"] = round(ratio, 3)
            checks["c64_at_least_passthrough"] = ratio >= 1.0
        for key, r in reload.items():
            base_p99 = r["median_p99_ms_without"]
            change = (r["median_p99_ms_with"] - base_p99) / base_p99
            checks[f"{key}_reload_p99_change"] = round(change, 3)
            checks[f"{key}_reload_p99_within_10pct"] = change < 0.10
            checks[f"{key}_reload_failures"] = r["failed_with"]
        results["targets"] = checks
    finally:
        for s in (traced, replica, passthrough, stream_mock, mock):
            if s.proc is not None:
                s.stop()
        redis.cleanup()
        script.unlink(missing_ok=True)
        print(json.dumps(results, indent=2))
    return 0


def cache_hit_bench(
    replica_url: str, mock_url: str, script: Path, args: Any, replica_pid: int, mock_pid: int
) -> dict[str, Any]:
    """c=1 p50 of: the mock direct, the replica forwarding, the replica answering a hit."""
    cached = Path(tempfile.mkstemp(suffix=".lua")[1])
    body = json.dumps({**json.loads(BODY), "model": "cached"})
    cached.write_text(WRK_SCRIPT % (json.dumps(body), SAMPLE_CLIENT_KEY))
    try:
        runs: dict[str, list[dict[str, Any]]] = {"direct": [], "replica": [], "cache_hit": []}
        for _ in range(args.interleave):
            runs["direct"].append(
                wrk(mock_url + "/v1/chat/completions", script, 1, args.duration, mock_pid)
            )
            runs["replica"].append(
                wrk(replica_url + "/v1/chat/completions", script, 1, args.duration, replica_pid)
            )
            runs["cache_hit"].append(
                wrk(replica_url + "/v1/chat/completions", cached, 1, args.duration, replica_pid)
            )
    finally:
        cached.unlink(missing_ok=True)
    probe = subprocess.run(
        ["curl", "-s", "-D", "-", "-o", "/dev/null", "-H", "Content-Type: application/json",
         "-H", f"Authorization: Bearer {SAMPLE_CLIENT_KEY}", "-d", body,
         replica_url + "/v1/chat/completions"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    said = [h for h in probe.stdout.lower().splitlines() if h.startswith("x-configbus-cache:")]
    out: dict[str, Any] = {"x-configbus-cache after the runs": said[0].split(":")[1].strip()}
    for name, rs in runs.items():
        out[name] = {
            "p50_ms": statistics.median(r["p50_ms"] for r in rs),
            "p50_ms_spread": sorted(r["p50_ms"] for r in rs),
            "p99_ms": statistics.median(r["p99_ms"] for r in rs),
            "rps": statistics.median(r["rps"] for r in rs),
            "failed": sum(r["failed"] for r in rs),
            "server_cpu_us_per_req": statistics.median(r["server_cpu_us_per_req"] or 0 for r in rs),
        }
    hit = out["cache_hit"]["p50_ms"]
    out["cache_hit_p50_at_most_1ms"] = hit <= 1.0
    out["cache_hit_vs_forwarding_p50_ms"] = round(hit - out["replica"]["p50_ms"], 3)
    return out


if __name__ == "__main__":
    sys.exit(main())
