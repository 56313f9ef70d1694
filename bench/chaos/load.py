"""Client load on every replica, each answer classified by its cause when it failed."""

from __future__ import annotations

import asyncio
import random
import time

import httpx

from bench.chaos.invariants import Ledger
from bench.chaos.processes import Replica
from configbus.testing import SAMPLE_CLIENT_KEY

AUTH = {"authorization": f"Bearer {SAMPLE_CLIENT_KEY}"}


class Load:
    def __init__(self, ledger: Ledger, rng: random.Random) -> None:
        self.ledger, self.rng = ledger, rng

    async def worker(self, rep: Replica, worker: int, stopping: asyncio.Event) -> None:
        """Chat requests on `rep` one after another, every fifth streamed."""
        n = 0
        while not stopping.is_set():
            if rep.down or rep.http is None:
                await asyncio.sleep(0.02)
                continue
            n += 1
            stream = n % 5 == 0
            body = {
                "model": "m",
                "messages": [{"role": "user", "content": f"hi {worker} {n}"}],
                "stream": stream,
            }
            rep.in_flight += 1
            self.ledger.requests["sent"] += 1
            try:
                resp = await rep.http.post(
                    rep.url + "/v1/chat/completions", json=body, headers=AUTH
                )
                self.classify(rep, resp, stream)
            except httpx.TimeoutException as exc:
                self.ledger.fail(
                    "redis_or_internal", rep, 0, f"client timeout {type(exc).__name__}"
                )
            except httpx.HTTPError as exc:
                self.ledger.fail("transport", rep, 0, repr(exc))
            finally:
                rep.in_flight -= 1
            await asyncio.sleep(self.rng.uniform(0.01, 0.04))

    def classify(self, rep: Replica, resp: httpx.Response, stream: bool) -> None:
        ledger = self.ledger
        status = resp.status_code
        version = resp.headers.get("x-configbus-version")
        if version is not None and rep.last is not None:
            if ledger.rollouts:
                ledger.answered(rep, int(version), time.time())
            if (rep.last[0], int(version)) in ledger.injected:
                ledger.violations.append(
                    {"what": "answered_with_rejected_version", "replica": rep.rid,
                     "version": int(version)}
                )  # fmt: skip
        if status == 200:
            text = resp.text
            if stream:  # pieces of "served by x" spread over chunks; an error is in-band
                good = "data: [DONE]" in text and '"error"' not in text
            else:
                good = "served by" in text
            if not good:
                ledger.fail("upstream", rep, status, text[:200])
                return
            ledger.requests["ok"] += 1
            if resp.headers.get("x-configbus-provider") == "upstream-b":
                ledger.fallback_answers += 1
            return
        try:
            code = resp.json().get("error", {}).get("code") or ""
        except ValueError:
            code = ""
        if status == 429:
            cause = "rate_limit"
        elif status in (502, 504) or (status == 503 and code == "circuit_open"):
            cause = "upstream"
        elif status in (400, 401, 403, 404) or (status == 503 and code in ("no_config", "no_deployment")):  # fmt: skip
            cause = "config"
        else:
            cause = "redis_or_internal"
        ledger.fail(cause, rep, status, f"{code} {resp.text[:200]}")
