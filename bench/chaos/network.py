"""Network faults between the replicas and Redis (the fleet puts a `FaultProxy` on every
replica's way to Redis and its read replica, and, as root, runs `IN_NETNS` in a network
namespace of its own):

    net_latency      200 ms added each way on every replica's Redis connections
    net_loss         10 % of TCP segments lost: retransmission stalls of 200 ms and more
    net_cut          every replica's Redis connection reset at once (a middlebox restarting)
    netns_link_down  the namespace's link to Redis taken down (its clients still reach it),
                     a publish meanwhile, then the link up again

While a link is slow or lossy a publish must still reach every replica (`on_head_under_
fault_s`, judged against `UNDER_FAULT_S`); after it, as after every fault, every replica
must be on head within the soak's promise. The cut-off replica must keep serving.
"""

from __future__ import annotations

import asyncio
import contextlib
from time import monotonic as now
from typing import TYPE_CHECKING, Any

import httpx

from bench.chaos.invariants import BACK_ON_HEAD_S
from bench.chaos.processes import IN_NETNS
from configbus.tooling.faultproxy import NetFaults

if TYPE_CHECKING:
    from bench.chaos.faults import Faults

LATENCY_S = 0.2
LOSS = 0.1
# Slow links make a publish slower to arrive, not lost: every replica on it within this.
UNDER_FAULT_S = 5.0
NETNS_DOWN_S = 3.0  # past the replicas' 2 s socket timeout


async def _degraded(faults: Faults, net: NetFaults, hold_s: float) -> dict[str, Any]:
    fleet = faults.fleet
    before = fleet.net_stats()
    fleet.set_net_faults(net)
    try:
        started = now()
        ev = await faults.publisher.publish_now()
        under = await faults.watch.converge(started, timeout_s=UNDER_FAULT_S + 5)
        # Load, the publisher and the reporters go on over the bad link meanwhile.
        await asyncio.sleep(max(0.0, hold_s - (now() - started)))
    finally:
        fleet.set_net_faults(NetFaults())
    after = fleet.net_stats()
    back = await faults.watch.converge(now())
    lost = sum(a["segments_lost"] - before[k]["segments_lost"] for k, a in after.items())
    stall = sum(a["stall_s"] - before[k]["stall_s"] for k, a in after.items())
    return {
        "latency_ms": round(net.latency_s * 1000),
        "loss": net.loss,
        "version_under_fault": ev[1],
        "on_head_under_fault_s": under,
        "segments_lost": lost,
        "retransmit_stall_s": round(stall, 2),
        "back_on_head_s": back,
        "ok": under is not None and under <= UNDER_FAULT_S and back is not None,
    }


async def net_latency(faults: Faults, hold_s: float) -> dict[str, Any]:
    return await _degraded(faults, NetFaults(latency_s=LATENCY_S), hold_s)


async def net_loss(faults: Faults, hold_s: float) -> dict[str, Any]:
    return await _degraded(faults, NetFaults(loss=LOSS), hold_s)


async def net_cut(faults: Faults) -> dict[str, Any]:
    cut = faults.fleet.cut_connections()
    ev = await faults.publisher.publish_now()
    return {
        "connections_cut": cut,
        "version": ev[1],
        "back_on_head_s": await faults.watch.converge(now()),
    }


async def netns_link_down(faults: Faults, down_s: float) -> dict[str, Any]:
    fleet = faults.fleet
    ns = fleet.netns
    if ns is None:
        # Not counted as a failure (it cannot run here) but said in the summary.
        return {"skipped": fleet.netns_skipped, "back_on_head_s": 0.0, "ok": True}
    rep = next(r for r in fleet.replicas if r.rid == IN_NETNS)
    failed_before = sum(faults.ledger.failed.values())
    ns.link_down("redis")
    down_at = now()
    seen: dict[str, Any] = {}
    try:
        ev = await faults.publisher.publish_now()
        # The others follow; the cut-off replica cannot, and must keep serving what it has.
        await asyncio.sleep(max(0.0, down_s - (now() - down_at)))
        async with httpx.AsyncClient(timeout=2) as http:
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                st = (await http.get(rep.url + "/status")).json()
                seen = {"version": st["version"], "stale": st["stale"]}
    finally:
        ns.link_up("redis")
    up_at = now()
    back = await faults.watch.converge(up_at)
    failed = sum(faults.ledger.failed.values()) - failed_before
    return {
        "replica": rep.rid,
        "down_s": round(up_at - down_at, 2),
        "version_published_while_down": ev[1],
        "cut_off_replica_saw": seen,
        "failed_meanwhile": failed,
        "back_on_head_s": back,
        "ok": back is not None and back <= BACK_ON_HEAD_S and failed == 0 and bool(seen),
    }
