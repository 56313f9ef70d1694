"""Prometheus metrics of one admin app, in its own registry (no process globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class AdminMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "configbus_admin_requests_total",
            "Admin API requests by action and status",
            ["action", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "configbus_admin_request_seconds",
            "Admin API request latency by action",
            ["action"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.publishes = Counter(
            "configbus_admin_publishes_total",
            "Publish-like calls by kind and outcome",
            ["kind", "outcome"],
            registry=self.registry,
        )
        self.breaker_open = Gauge(
            "configbus_admin_redis_breaker_open",
            "1 while the Redis circuit breaker is open",
            registry=self.registry,
        )
        self.audit_failures = Counter(
            "configbus_admin_audit_failures_total",
            "Audit entries that could not be written",
            registry=self.registry,
        )
        self.denied = Counter(
            "configbus_admin_denied_total",
            "Requests refused before their handler ran, by action and outcome "
            "(unauthorized, forbidden, rate_limited)",
            ["action", "outcome"],
            registry=self.registry,
        )
        self.audit_unrecorded = Counter(
            "configbus_admin_audit_unrecorded_total",
            "Refusals counted but not written to the denied audit stream (sampled out)",
            registry=self.registry,
        )
        self.rollouts = Counter(
            "configbus_admin_rollouts_total",
            "Rollouts by what happened to them (started, promoted, aborted)",
            ["event"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "configbus_admin_rate_limited_total",
            "Write requests refused by the rate limit",
            registry=self.registry,
        )
