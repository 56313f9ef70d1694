"""What the proxy replica costs: wrk against the mock upstream directly, through a bare
aiohttp pass-through, and through one replica (auth, routing, fleet rate limit, metrics on),
at several concurrencies; then through the replica while a new version is published every
100 ms. Prints one JSON object.

    .venv/bin/python bench/proxy_overhead.py [--duration 5] [--concurrency 1,16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import shutil
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


def bench_data(upstream: str, rev: int) -> dict[str, Any]:
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
            }
        ],
        "models": [
            {
                "name": "m",
                "deployments": [{"provider": "up", "model": "mock"}],
                "params": {"temperature": 0.5},
            }
        ],
        "clients": [
            {
                "name": "bench",
                "key_sha256": key_sha256(SAMPLE_CLIENT_KEY),
                "models": ["*"],
                "rate_limit": {"rpm": 10_000_000},
            }
        ],
        "metadata": {"rev": rev},
    }


class Publisher:
    """Publishes a new version every `interval` seconds in a thread of its own."""

    _revs = itertools.count(1000)

    def __init__(self, redis_url: str, upstream: str, interval: float, duration: float) -> None:
        self.redis_url, self.interval = redis_url, interval
        # Bodies made (and secrets encrypted) before the run, so the publisher's own CPU
        # does not compete with the replica while it is measured.
        n = int(duration / interval) + 30
        self.bodies = [encode(bench_data(upstream, next(self._revs))) for _ in range(n)]
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
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk not found (apt-get install -y wrk)", file=sys.stderr)
        return 2
    conc = [int(c) for c in args.concurrency.split(",")]
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(WRK_SCRIPT % (json.dumps(BODY), SAMPLE_CLIENT_KEY))
    py = sys.executable
    redis = RedisServer().start()
    mport, pport, rport = free_port(), free_port(), free_port()
    mock_url = f"http://127.0.0.1:{mport}"
    mock = Service(configbus_cmd("mock-upstream", "--port", str(mport), "--name", "A"))
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
    results: dict[str, Any] = {"duration_s": args.duration, "cpus": os.cpu_count()}
    try:
        for s in (mock, passthrough, replica):
            s.start()
        mock.wait_http(mock_url + "/_stats")
        replica.wait_http(f"http://127.0.0.1:{rport}/health/live")

        async def seed() -> None:
            r = connect(redis.url)
            await Store(r, NAMESPACE).publish(encode(bench_data(mock_url, 1)), author="bench")
            await r.aclose()

        asyncio.run(seed())
        replica.wait_http(f"http://127.0.0.1:{rport}/health/ready")
        passthrough.wait_http(f"http://127.0.0.1:{pport}/v1/chat/completions", status=405)
        targets = {
            "direct": (mock_url, mock),
            "passthrough": (f"http://127.0.0.1:{pport}", passthrough),
            "replica": (f"http://127.0.0.1:{rport}", replica),
        }
        for name, (base, svc) in targets.items():
            assert svc.proc is not None
            results[name] = {
                f"c{c}": wrk(base + "/v1/chat/completions", script, c, args.duration, svc.proc.pid)
                for c in conc
            }
        assert replica.proc is not None
        # Reloads vs none, interleaved in rounds so both see the same machine noise; the
        # comparison uses the median p99 of each side.
        reload: dict[str, Any] = {}
        url = f"http://127.0.0.1:{rport}/v1/chat/completions"
        for c in [int(x) for x in args.reload_concurrency.split(",")]:
            quiet, busy = [], []
            for _ in range(args.rounds):
                quiet.append(wrk(url, script, c, args.duration, replica.proc.pid))
                with Publisher(redis.url, mock_url, 0.1, args.duration + 1) as pub:
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

        d, p, rp = results["direct"], results["passthrough"], results["replica"]
        checks: dict[str, Any] = {}
        if "c1" in d:
            over = rp["c1"]["p50_ms"] - d["c1"]["p50_ms"]
            checks["c1_p50_overhead_ms"] = round(over, 3)
            checks["c1_p50_overhead_under_0.5ms"] = over < 0.5
        if "c64" in p:
            ratio = rp["c64"]["rps"] / p["c64"]["rps"]
            checks["c64_rps_vs_passthrough"] = round(ratio, 3)
            checks["c64_at_least_half_of_passthrough"] = ratio >= 0.5
        for key, r in reload.items():
            base_p99 = r["median_p99_ms_without"]
            change = (r["median_p99_ms_with"] - base_p99) / base_p99
            checks[f"{key}_reload_p99_change"] = round(change, 3)
            checks[f"{key}_reload_p99_within_10pct"] = change < 0.10
            checks[f"{key}_reload_failures"] = r["failed_with"]
        results["targets"] = checks
    finally:
        for s in (replica, passthrough, mock):
            s.stop()
        redis.cleanup()
        script.unlink(missing_ok=True)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
