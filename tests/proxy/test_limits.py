"""Fleet limits: allowances leased from token buckets, admitted locally (fakeredis)."""

from __future__ import annotations

import fakeredis
import pytest

from configbus.connection import connect
from configbus.document import RateLimit
from proxy.admission import Ticket, admit
from proxy.allowance import lease_cap
from proxy.limits import FleetLimits
from tests.support import free_port


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def fleet(server: fakeredis.FakeServer, replica: str, clock: Clock) -> FleetLimits:
    return FleetLimits(fakeredis.FakeAsyncRedis(server=server), "ns", replica, clock=clock)


async def drain(*limits: FleetLimits) -> None:
    """Run lease rounds until no allowance wants anything."""
    for _ in range(10):
        for f in limits:
            await f.step()


def test_lease_cap_is_a_twentieth_of_the_bucket_and_at_most_a_second_of_rate() -> None:
    assert lease_cap(5.0, 30.0) == 1
    assert lease_cap(5.0, 100.0) == 5
    assert lease_cap(1 / 12, 5.0) == 1
    assert lease_cap(166_666.0, 10_000_000.0) == 166_666


def test_burst_sizes_both_buckets() -> None:
    rl = RateLimit(rpm=300, tpm=60_000, burst=30)
    assert rl.capacity(300, tokens=False) == 30
    assert rl.capacity(60_000, tokens=True) == 6000  # the same tenth of a minute
    assert RateLimit(tpm=1000).capacity(1000, tokens=True) == 1000


async def test_two_replicas_admit_exactly_the_bucket_when_taking_turns() -> None:
    server, clock = fakeredis.FakeServer(), Clock()
    a, b = fleet(server, "a", clock), fleet(server, "b", clock)
    limit = RateLimit(rpm=5)
    (xa,) = a.allowances_for("key", "k", limit)
    (xb,) = b.allowances_for("key", "k", limit)
    admitted = 0
    for i in range(12):
        f, x = (a, xa) if i % 2 == 0 else (b, xb)
        if x.take(1.0, clock()):
            admitted += 1
        await drain(f)
    assert admitted == 5
    assert not xa.take(1.0, clock()) and xa.remaining(clock()) == 0
    assert 1 <= xa.retry_after_s(clock()) <= 12
    await a.aclose()
    await b.aclose()


async def test_refusal_gives_back_what_earlier_limits_took_and_shadow_only_counts() -> None:
    server, clock = fakeredis.FakeServer(), Clock()
    f = fleet(server, "a", clock)
    (key,) = f.allowances_for("key", "k", RateLimit(rpm=600))
    (shadow,) = f.allowances_for("model", "m", RateLimit(rpm=1, shadow=True))
    (glob,) = f.allowances_for("global", "fleet", RateLimit(rpm=2))
    results = []
    for _ in range(4):
        t = Ticket(10)
        results.append((admit(f, (key, shadow, glob), t, clock()), [a.kind for a in t.shadow]))
        await drain(f)
    assert [r[0] is None for r in results] == [True, True, False, False]
    assert results[0][1] == [] and results[1][1] == ["model"]  # the shadow limit hit: counted
    assert f.refusals[("model", "requests", True)] >= 1
    assert f.refusals[("global", "requests", False)] == 2
    # The key limit got back the two requests the global limit refused: it was charged two.
    raw = await fakeredis.FakeAsyncRedis(server=server).hget(key.key, "tokens")
    assert 600 - float(raw or 0) - key.balance == pytest.approx(2, abs=0.5)
    await f.aclose()


async def test_token_estimate_is_corrected_by_the_real_usage() -> None:
    server, clock = fakeredis.FakeServer(), Clock()
    f = fleet(server, "a", clock)
    (tok,) = f.allowances_for("key", "k", RateLimit(tpm=600, burst=100))
    t = Ticket(10)
    assert admit(f, (tok,), t, clock()) is None  # credit: 0 - 10
    await drain(f)
    t.settle(60, True)  # used 60, not 10: 50 more owed
    await drain(f)
    # Bucket 100: 10 + 50 taken → the replica holds what is left of its lease, the rest in Redis.
    raw = await fakeredis.FakeAsyncRedis(server=server).hget(tok.key, "tokens")
    granted_total = 100 - float(raw or 0)
    assert granted_total - tok.balance == pytest.approx(60, abs=1)
    await f.aclose()


async def test_redis_down_limits_locally_to_a_share_then_resumes() -> None:
    clock = Clock()
    redis = connect(f"redis://127.0.0.1:{free_port()}/0", connect_timeout_s=0.2, retries=0)
    f = FleetLimits(redis, "ns", "a", timeout_s=0.2, clock=clock)
    f.live_replicas = 2
    (x,) = f.allowances_for("key", "k", RateLimit(rpm=60, burst=10))
    assert x.take(1.0, clock())  # credit, then the lease call fails
    await f.step()
    assert f.local and f.status()["mode"] == "local" and f.status()["local_share"] == "1/2"
    got = [x.take(1.0, clock()) for _ in range(8)]
    assert got.count(True) == 5  # half of the burst of 10
    clock.t += 2.0  # 1 request/s / 2 replicas: one more token
    assert x.take(1.0, clock()) and not x.take(1.0, clock())
    await f.aclose()
    await redis.aclose()
    # Redis back: the next try leaves the local mode.
    server = fakeredis.FakeServer()
    f.caller = fleet(server, "a", clock).caller
    clock.t += 5
    await f.step()
    assert not f.local and x.balance == 0 and not x.dry


async def test_credit_is_taken_only_while_the_bucket_holds_it() -> None:
    server, clock = fakeredis.FakeServer(), Clock()
    a, b = fleet(server, "a", clock), fleet(server, "b", clock)
    (xa,) = a.allowances_for("key", "k", RateLimit(rpm=2))
    (xb,) = b.allowances_for("key", "k", RateLimit(rpm=2))
    assert xa.take(1.0, clock())  # cold, the bucket (2) can cover it: credit
    assert not xa.take(1.0, clock())  # one lease (1) of credit at most
    await drain(a)  # repays the credit and takes the last token: a sees the bucket empty
    assert xa.fleet_left == 0
    assert xa.take(1.0, clock()) and not xa.take(1.0, clock())
    # b never saw the bucket: its first request is credit; its lease finds the bucket empty,
    # and from then on it waits for real tokens.
    assert xb.take(1.0, clock())
    await drain(b)
    assert xb.dry and not xb.take(1.0, clock())
    await a.aclose()
    await b.aclose()
