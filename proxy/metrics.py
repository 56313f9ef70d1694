"""The proxy's Prometheus metrics, in the app's own registry (shared with its watcher)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from configbus.keyset import KeyFollower
    from proxy.limits import FleetLimits
    from proxy.usage import Meter

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._requests = Counter(
            "configbus_proxy_requests",
            "Chat completion requests by public model, provider that served (or 'none') and status",
            ["model", "provider", "status"],
            registry=registry,
        )
        self._latency = Histogram(
            "configbus_proxy_upstream_seconds",
            "Upstream latency to response headers",
            ["provider"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.overhead = Histogram(
            "configbus_proxy_overhead_seconds",
            "The replica's own time per answered request, upstream waits excluded, up to "
            "the answer's headers (x-configbus-overhead-ms)",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
            registry=registry,
        )
        self._attempts = Counter(
            "configbus_proxy_upstream_attempts",
            "Upstream attempts by provider and outcome",
            ["provider", "outcome"],
            registry=registry,
        )
        self._breaker = Gauge(
            "configbus_proxy_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            ["provider"],
            registry=registry,
        )
        self.rate_limit_degraded = Gauge(
            "configbus_proxy_rate_limit_local",
            "1 while rate limits are local, each replica at 1/N of each limit (Redis down)",
            registry=registry,
        )
        self._live = Gauge(
            "configbus_proxy_rate_limit_live_replicas",
            "Replicas sharing the fleet's limits, as last seen in Redis (the N of 1/N)",
            registry=registry,
        )
        self._lease_calls = Gauge(
            "configbus_proxy_rate_limit_lease_calls",
            "Lease calls to Redis made by this replica (total), by outcome",
            ["outcome"],
            registry=registry,
        )
        self._refused = Counter(
            "configbus_proxy_rate_limited",
            "Requests a limit refused (shadow=true: would have refused), by limit and dimension",
            ["limit", "dimension", "shadow"],
            registry=registry,
        )
        # Usage by public model and provider only: a label per key would make one series
        # per key (100,000 keys: 100,000 series per replica); per key is the usage API's.
        self._tokens = Counter(
            "configbus_proxy_usage_tokens",
            "Tokens the upstreams reported, by public model, provider and kind (prompt, "
            "completion); counted when usage is flushed (every second)",
            ["model", "provider", "kind"],
            registry=registry,
        )
        self._cost = Counter(
            "configbus_proxy_usage_cost_usd",
            "Cost of the tokens at the deployments' prices, by public model and provider",
            ["model", "provider"],
            registry=registry,
        )
        self._budget_refused = Counter(
            "configbus_proxy_budget_refused",
            "Requests refused because a key's or a team's budget is used up, by scope",
            ["scope"],
            registry=registry,
        )
        self._usage_flush = Gauge(
            "configbus_proxy_usage_flushes",
            "Usage flushes to Redis made by this replica (total), by outcome",
            ["outcome"],
            registry=registry,
        )
        self._usage_pending = Gauge(
            "configbus_proxy_usage_pending_cells",
            "Usage cells (minute x key x model x provider) counted but not yet in Redis",
            registry=registry,
        )
        self._keys_rev = Gauge(
            "configbus_keys_revision",
            "Revision of the client key collection this replica holds (its ACK)",
            registry=registry,
        )
        self._keys_count = Gauge(
            "configbus_keys_count", "Client keys this replica holds", registry=registry
        )
        self._keys_stale = Gauge(
            "configbus_keys_stale",
            "1 while the key collection could not be confirmed with Redis (file or last read)",
            registry=registry,
        )
        # Label children cached: `labels()` does a lock and a dict build on every call.
        self._req_children: dict[tuple[str, str, int], Counter] = {}
        self._lat_children: dict[str, Histogram] = {}
        self._att_children: dict[tuple[str, str], Counter] = {}
        self._ref_children: dict[tuple[str, str, bool], Counter] = {}

    def request(self, model: str, provider: str, status: int) -> None:
        key = (model, provider, status)
        c = self._req_children.get(key)
        if c is None:
            c = self._req_children[key] = self._requests.labels(model, provider, str(status))
        c.inc()

    def latency(self, provider: str, seconds: float) -> None:
        h = self._lat_children.get(provider)
        if h is None:
            h = self._lat_children[provider] = self._latency.labels(provider)
        h.observe(seconds)

    def attempt(self, provider: str, outcome: str) -> None:
        key = (provider, outcome)
        c = self._att_children.get(key)
        if c is None:
            c = self._att_children[key] = self._attempts.labels(provider, outcome)
        c.inc()

    def refused(self, limit: str, dimension: str, shadow: bool) -> None:
        key = (limit, dimension, shadow)
        c = self._ref_children.get(key)
        if c is None:
            c = self._ref_children[key] = self._refused.labels(
                limit, dimension, "true" if shadow else "false"
            )
        c.inc()

    def limits_state(self, limits: FleetLimits) -> None:
        self.rate_limit_degraded.set(1 if limits.local else 0)
        self._live.set(limits.live_replicas)
        self._lease_calls.labels("ok").set(limits.lease_calls - limits.lease_failures)
        self._lease_calls.labels("failed").set(limits.lease_failures)

    def keys_state(self, keys: KeyFollower | None) -> None:
        if keys is not None:
            self._keys_rev.set(keys.table.rev)
            self._keys_count.set(len(keys.table))
            self._keys_stale.set(1 if keys.stale or not keys.loaded else 0)

    def usage(self, cells: dict[tuple[str, str, str, str], list[int]]) -> None:
        """Counts of one flush window: series (key, team, model, provider) → [requests,
        prompt, completion, pico-USD]."""
        by: dict[tuple[str, str], list[int]] = {}
        for (_, _, model, provider), c in cells.items():
            acc = by.setdefault((model, provider), [0, 0, 0])
            acc[0] += c[1]
            acc[1] += c[2]
            acc[2] += c[3]
        for (model, provider), (prompt, completion, pico) in by.items():
            if prompt:
                self._tokens.labels(model, provider, "prompt").inc(prompt)
            if completion:
                self._tokens.labels(model, provider, "completion").inc(completion)
            if pico:
                self._cost.labels(model, provider).inc(pico / 1e12)

    def budget_refused(self, scope: str) -> None:
        self._budget_refused.labels(scope).inc()

    def usage_state(self, meter: Meter) -> None:
        self._usage_flush.labels("ok").set(meter.flushes)
        self._usage_flush.labels("failed").set(meter.flush_failures)
        self._usage_pending.set(meter.pending_cells)

    def breaker(self, provider: str, state: int) -> None:
        self._breaker.labels(provider).set(state)
