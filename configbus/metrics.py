"""Prometheus metrics of a watcher, in a registry the embedding service chooses."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WatcherMetrics:
    def __init__(self, registry: CollectorRegistry | None, namespace: str) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, ns = self.registry, ["namespace"]
        self.applied_version = Gauge(
            "configbus_applied_version", "Config version this process serves", ns, registry=r
        ).labels(namespace)
        self.apply_seconds = Histogram(
            "configbus_apply_seconds",
            "Time from fetch to swap of one version (checksum, decode, build, swap)",
            ns,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=r,
        ).labels(namespace)
        self.head_version = Gauge(
            "configbus_head_version",
            "The namespace's head version as this process last read or heard it",
            ns,
            registry=r,
        ).labels(namespace)
        self.propagation_seconds = Histogram(
            "configbus_propagation_seconds",
            "Time from a version's publish (its record's created_at) to this process's swap",
            ns,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        ).labels(namespace)
        self.rejects = Counter(
            "configbus_rejects", "Versions rejected (NACK)", ns, registry=r
        ).labels(namespace)
        self.redis_connected = Gauge(
            "configbus_redis_connected",
            "1 when the last Redis operation succeeded",
            ns,
            registry=r,
        ).labels(namespace)
        self.stale = Gauge(
            "configbus_stale", "1 when serving a config Redis has not confirmed", ns, registry=r
        ).labels(namespace)
        self.syncs = Counter(
            "configbus_syncs", "Syncs by outcome", ["namespace", "outcome"], registry=r
        )
        self.namespace = namespace
        self._syncs_by_outcome: dict[str, Counter] = {}

    def count_sync(self, outcome: str) -> None:
        # Children cached: labels() takes a lock and builds a key on every call.
        child = self._syncs_by_outcome.get(outcome)
        if child is None:
            child = self._syncs_by_outcome[outcome] = self.syncs.labels(self.namespace, outcome)
        child.inc()
