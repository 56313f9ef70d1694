"""One soak run: start the fleet, run load, publisher, watchers and faults, then judge."""

from __future__ import annotations

import asyncio
import random
import secrets
import signal
from pathlib import Path
from time import monotonic as now
from typing import Any

import httpx

from bench.chaos.faults import Faults
from bench.chaos.invariants import Ledger, Watch
from bench.chaos.keys import KeyChurn
from bench.chaos.load import Load
from bench.chaos.processes import Fleet
from bench.chaos.publisher import Publisher
from bench.chaos.report import summary


class Soak:
    def __init__(
        self, minutes: float, run_dir: Path, seed: int, concurrency: int, *, netns: bool = True
    ) -> None:
        self.minutes, self.seed, self.concurrency = minutes, seed, concurrency
        self.run_dir = run_dir
        self.run_id = secrets.token_hex(3)
        rng = random.Random(seed)
        self.stopping = asyncio.Event()
        self.fleet = Fleet(run_dir, concurrency, netns=netns)
        self.ledger = Ledger()
        self.publisher = Publisher(self.fleet, self.ledger, rng, self.run_id)
        self.watch = Watch(self.fleet, self.ledger, self.publisher.lock)
        self.load = Load(self.ledger, rng)
        self.keys = KeyChurn(self.fleet, self.ledger, rng)
        # Short runs (make test) keep network faults short; long ones hold them longer.
        hold_s = 2.0 if minutes < 5 else 5.0
        self.faults = Faults(
            self.fleet, self.ledger, self.publisher, self.watch, rng, hold_s=hold_s
        )

    async def start(self) -> None:
        await self.fleet.start_services()
        # The first version, then the replicas (which must come up on it).
        while self.publisher.n == 0 or self.publisher.pending is not None:
            await self.publisher.step(admin=0)
        await self.fleet.start_replicas()

    async def run(self) -> dict[str, Any]:
        await self.start()
        self.ledger.t0 = now()
        end = self.ledger.t0 + self.minutes * 60
        tasks = [
            asyncio.create_task(self.publisher.loop(self.stopping)),
            asyncio.create_task(self.watch.auditor(self.stopping)),
            asyncio.create_task(self.keys.churn(self.stopping)),
            asyncio.create_task(self.keys.probe(self.stopping)),
        ]
        for rep in self.fleet.replicas:
            tasks.append(asyncio.create_task(self.watch.poll_status(rep, self.stopping)))
            tasks += [
                asyncio.create_task(self.load.worker(rep, w, self.stopping))
                for w in range(self.concurrency)
            ]
        try:
            await self.faults.loop(end)
            await asyncio.sleep(max(0.0, end - now()))
            # Quiet end: the last pending publish settles, then everyone must be on head.
            self.stopping.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            tasks = []
            await self.publisher.settle()
            final = await self.watch.converge(now())
            await self._final_look()
            await self.watch.read_history()
            keys = await self.keys.final()
            return summary(
                self.ledger,
                run_id=self.run_id,
                replica_ids={r.rid for r in self.fleet.replicas},
                head=await self.fleet.head(),
                final_converge_s=final,
                minutes=self.minutes,
                seed=self.seed,
                run_dir=str(self.run_dir),
                keys=keys,
                network={
                    "netns": self.fleet.netns.name if self.fleet.netns else None,
                    "netns_skipped": self.fleet.netns_skipped,
                    "proxies": self.fleet.net_stats(),
                },
            )
        finally:
            self.stopping.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _final_look(self) -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            for rep in self.fleet.replicas:
                try:
                    self.ledger.observe(rep, (await http.get(rep.url + "/status")).json())
                except (httpx.HTTPError, ValueError) as exc:
                    self.ledger.violations.append(
                        {"what": "not_answering_at_end", "replica": rep.rid, "error": repr(exc)}
                    )

    async def stop(self) -> None:
        self.stopping.set()
        await self.fleet.stop()


async def soak(
    minutes: float, run_dir: Path, seed: int, concurrency: int, *, netns: bool = True
) -> dict[str, Any]:
    """Run a soak and always stop what it started; a crash becomes an `error` summary."""
    runner = Soak(minutes, run_dir, seed, concurrency, netns=netns)
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Stopped from outside: cancel the run; the cleanup below still stops every child.
        asyncio.get_running_loop().add_signal_handler(sig, task.cancel)
    try:
        return await runner.run()
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "run_dir": str(run_dir)}
    finally:
        await runner.stop()
