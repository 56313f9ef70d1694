"""One fleet-wide token bucket as a replica sees it: a local allowance leased from Redis.

The bucket lives in Redis (`configbus.counters.TOKEN_BUCKET_LEASE`); a replica admits from
the few tokens it leased (`balance`) and asks for more in the background when it falls
under half a lease (`proxy.limits.FleetLimits` runs the calls). Admission is a few float
operations: no Redis, no lock, no allocation.

- A request needs one token of the requests bucket; a token-limited request needs one token
  of the tokens bucket and is charged its estimate (the balance may go below zero: a debt the
  next lease repays first), corrected with the real usage when the answer ends (`settle`).
- While the bucket, as last seen, holds at least a lease, up to one lease (`lease_cap`) may
  be taken on credit, so the first requests after an idle spell do not wait for a lease;
  once Redis says the bucket is empty or nearly so, admission stops at zero until a lease
  brings tokens. (A new allowance does not lease before its first request: replicas that
  get no traffic would hold tokens the others need.)
- Per replica, admissions run ahead of the bucket by at most what it holds (≤ one lease) plus
  the credit (≤ one lease): the fleet overshoots a limit by at most replicas x 2 x lease_cap
  units (tokens: plus one request's estimate per replica). `lease` adapts to the replica's
  rate (a second of it), `lease_cap` bounds it: 5% of the bucket, at most one second
  of the limit's rate, at least 1.
- While Redis is unreachable the replica admits from a local bucket with 1/N of the rate and
  size (N: live replicas last seen), started full when the local mode begins.
"""

from __future__ import annotations

import math
from collections.abc import Callable

# A lease should last this long at the replica's recent rate...
LEASE_HORIZON_S = 1.0
# ...and never hold more than this share of the bucket, nor more than a second of its rate.
LEASE_CAP_SHARE = 0.05
LEASE_CAP_S = 1.0
# Unused tokens go back to the bucket after this long without a request.
IDLE_GIVE_BACK_S = 2.0
# Weight of the newest rate sample in the moving average that sizes leases.
RATE_EWMA = 0.5


def lease_cap(rate_per_s: float, capacity: float) -> int:
    """The largest lease a bucket of this rate and size hands one replica (at least 1)."""
    return max(1, int(min(capacity * LEASE_CAP_SHARE, rate_per_s * LEASE_CAP_S)))


class Allowance:
    __slots__ = (
        "_local_state",
        "_wake",
        "balance",
        "capacity",
        "dry",
        "fleet_left",
        "give_back",
        "key",
        "kind",
        "last_lease",
        "last_used",
        "lease",
        "local_tokens",
        "local_ts",
        "max_lease",
        "name",
        "pending",
        "per_minute",
        "per_minute_bytes",
        "rate_est",
        "rate_per_s",
        "retry_at",
        "shadow",
        "tokens",
        "used",
    )

    def __init__(
        self,
        key: str,
        kind: str,
        name: str,
        *,
        tokens: bool,
        per_minute: int,
        capacity: float,
        shadow: bool,
        wake: Callable[[Allowance], None],
        local: Callable[[], int],
        now: float,
    ) -> None:
        self.key = key
        self.kind = kind  # what a 429 names: global, provider, key, model, ip
        self.name = name
        self.tokens = tokens  # the tokens bucket (else the requests bucket)
        self._wake = wake
        # 0 while the fleet mode holds; else the live replicas the local share divides by.
        self._local_state = local
        self.balance = 0.0
        self.dry = False
        self.pending = False
        self.give_back = 0.0
        self.used = 0.0
        self.rate_est = 0.0
        self.lease = 1
        self.retry_at = 0.0
        self.last_lease = now
        self.last_used = now
        self.local_tokens = 0.0
        self.local_ts = now
        self.per_minute = per_minute
        self.per_minute_bytes = b"%d" % per_minute
        self.rate_per_s = per_minute / 60.0
        self.capacity = capacity
        self.shadow = shadow
        self.fleet_left = int(capacity)
        self.max_lease = lease_cap(self.rate_per_s, capacity)

    def configure(self, *, per_minute: int, capacity: float, shadow: bool) -> None:
        """New settings from a new config version; the state carries over."""
        self.per_minute = per_minute
        self.per_minute_bytes = b"%d" % per_minute
        self.rate_per_s = per_minute / 60.0
        self.capacity = capacity
        self.shadow = shadow
        self.max_lease = lease_cap(self.rate_per_s, capacity)
        self.lease = min(self.lease, self.max_lease)

    # -- the request path -------------------------------------------------------------

    def take(self, cost: float, now: float) -> bool:
        """Admit `cost` units (1 request, or a token estimate) or refuse; never waits."""
        self.last_used = now
        n = self._local_state()
        if n:
            return self._take_local(cost, now, n)
        b = self.balance
        # Credit only while the bucket, as last seen, holds what the credit may take.
        if b < (1.0 if self.dry or self.fleet_left < self.max_lease else 1.0 - self.max_lease):
            self.used += cost  # demand, refused or not, sizes the next lease
            if cost > self.lease:
                self.lease = min(self.max_lease, math.ceil(cost))
            if not self.pending:
                self._wake(self)
            return False
        b -= cost
        self.balance = b
        self.used += cost
        if cost > self.lease:  # a lease covers at least one request
            self.lease = min(self.max_lease, math.ceil(cost))
        if b < self.lease * 0.5 and not self.pending:
            self._wake(self)
        return True

    def put_back(self, cost: float) -> None:
        """Undo a `take` (another limit of the same request refused it)."""
        if self._local_state():
            self.local_tokens += cost
        else:
            self.balance += cost
            self.used -= cost

    def settle(self, delta: float) -> None:
        """Charge `delta` more units (negative: refund) once a request's real cost is known."""
        if self._local_state():
            self.local_tokens = min(self.local_tokens - delta, self.capacity)
            return
        self.balance -= delta
        self.used += delta
        if self.balance > self.lease:  # hold no more than a lease: the rest goes back
            self.give_back += self.balance - self.lease
            self.balance = float(self.lease)
        if (self.balance < self.lease * 0.5 or self.give_back) and not self.pending:
            self._wake(self)

    def _take_local(self, cost: float, now: float, n: int) -> bool:
        cap = max(1.0, self.capacity / n)
        t = min(cap, self.local_tokens + (now - self.local_ts) * self.rate_per_s / n)
        self.local_ts = now
        if t < 1.0:
            self.local_tokens = t
            return False
        self.local_tokens = t - cost
        return True

    # -- what a response says about the bucket ----------------------------------------

    def remaining(self, now: float) -> int:
        n = self._local_state()
        if n:
            return max(0, int(self.local_tokens))
        return max(0, int(self.fleet_left + self.balance))

    def reset_s(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        return (self.capacity - self.remaining(now)) / self.rate_per_s

    def retry_after_s(self, now: float) -> float:
        """Seconds until one unit is likely to be there."""
        wait = (1.0 - self.remaining(now)) / self.rate_per_s
        return max(wait, self.retry_at - now, 0.0)

    # -- the background side (FleetLimits) --------------------------------------------

    def want(self, now: float) -> int:
        """Tokens to lease now (the debt included); 0 when it holds enough or must wait."""
        if self.dry and now < self.retry_at:
            return 0
        return max(0, math.ceil(self.lease - self.balance))

    def granted(self, want: int, granted: int, left: int, wait_ms: int, now: float) -> None:
        self.balance += granted
        self.fleet_left = left
        self.dry = granted < want
        self.retry_at = now + wait_ms / 1000 if self.dry else 0.0
        elapsed = now - self.last_lease
        if elapsed > 0.01:
            sample = self.used / elapsed
            self.rate_est = (
                sample
                if not self.rate_est
                else (RATE_EWMA * sample + (1 - RATE_EWMA) * self.rate_est)
            )
            self.used = 0.0
            self.last_lease = now
            self.lease = max(
                1, min(self.max_lease, math.ceil(self.rate_est * LEASE_HORIZON_S)), self.lease // 2
            )

    def idle(self, now: float) -> bool:
        """Unused for a while: give what it holds back (the next request takes credit)."""
        if now - self.last_used < IDLE_GIVE_BACK_S or self.balance <= 0:
            return False
        self.give_back += self.balance
        self.balance = 0.0
        self.rate_est = 0.0
        self.lease = 1
        return True

    def enter_local(self, n: int, now: float) -> None:
        self.local_tokens = max(1.0, self.capacity / n)
        self.local_ts = now

    def enter_fleet(self) -> None:
        """Redis is back: start over from the bucket there, holding nothing."""
        self.balance = 0.0
        self.give_back = 0.0
        self.dry = False
        self.retry_at = 0.0
        self.used = 0.0

    def __repr__(self) -> str:
        dim = "tokens" if self.tokens else "requests"
        return f"Allowance({self.kind} {self.name!r} {dim}, balance={self.balance:g})"
