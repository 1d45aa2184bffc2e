"""Prometheus metrics of one runtime process (its own registry, so apps never collide)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RuntimeMetrics:
    """Decision counts by outcome, decision latency, and sandbox worker restarts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "aios_policy_decisions",
            "Policy evaluations by outcome (ok or the error type)",
            ["outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "aios_policy_decision_duration_seconds",
            "Wall time of one policy evaluation, sandbox round trip included",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.cluster_stable = Gauge(
            "aios_cluster_stable",
            "1 when the cluster's latest stability check said stable, else 0",
            ["cluster_id"],
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "aios_sandbox_worker_restarts",
            "Sandbox workers killed and replaced, by reason",
            ["reason"],
            registry=self.registry,
        )

    def record_decision(self, outcome: str, seconds: float) -> None:
        self.decisions.labels(outcome=outcome).inc()
        self.latency.observe(seconds)

    def record_restart(self, reason: str) -> None:
        self.worker_restarts.labels(reason=reason).inc()

    def record_stability(self, cluster_id: str, stable: bool) -> None:
        self.cluster_stable.labels(cluster_id=cluster_id).set(1 if stable else 0)
