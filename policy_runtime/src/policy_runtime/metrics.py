"""Prometheus metrics of one runtime process (its own registry, so apps never collide).

Label values stay bounded: outcomes, reasons and actions are fixed sets, and a cluster id
becomes a label value only for the first ``max_clusters`` clusters the process reports on
(setting ``AIOS_METRICS_MAX_CLUSTERS``); every later cluster is counted under
``cluster_id="other"``. Policy URIs and executor ids are never labels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

DEFAULT_MAX_CLUSTERS = 20
# The cluster_id label value of every cluster beyond the limit.
OTHER_CLUSTERS = "other"
# What a governed action got, and why.
DECISIONS = ("allowed", "denied")
DECISION_OUTCOMES = ("policy_allowed", "policy_denied", "no_policy", "policy_failed")
STABILITY_OUTCOMES = ("stable", "unstable", "failed")
REMOTE_OUTCOMES = ("ok", "failed", "unreachable", "bad_answer", "not_configured")


class ClusterLabels:
    """The cluster_id label value of a cluster: its id for the first ``limit`` ids seen,
    ``other`` for the rest (first come, first served, for the life of the process)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, cluster_id: str) -> str:
        with self._lock:
            if cluster_id in self._seen:
                return cluster_id
            if len(self._seen) < self.limit:
                self._seen.add(cluster_id)
                return cluster_id
        return OTHER_CLUSTERS


class RuntimeMetrics:
    """Decision counts by outcome, decision latency, sandbox worker restarts, the database's
    health, governed actions' decisions, stability checks and remote executions."""

    def __init__(self, max_clusters: int = DEFAULT_MAX_CLUSTERS) -> None:
        self.registry = CollectorRegistry()
        self.cluster_label = ClusterLabels(max_clusters)
        limit = (f"the first {max_clusters} clusters by id (AIOS_METRICS_MAX_CLUSTERS), "
                 f"the others as cluster_id=\"{OTHER_CLUSTERS}\"")
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
            "1 when the cluster's latest stability check said stable, else 0; per cluster for "
            f"{limit} (1 only when all of them are stable)",
            ["cluster_id"],
            registry=self.registry,
        )
        self.worker_restarts = Counter(
            "aios_sandbox_worker_restarts",
            "Sandbox workers killed and replaced, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.database_up = Gauge(
            "aios_database_up",
            "1 while the runtime's database answers its pings (what /healthz reports), else 0",
            registry=self.registry,
        )
        self.registry_clusters = Gauge(
            "aios_registry_clusters",
            "Cluster documents in the clusters registry this process serves (counted with "
            "the database's health check; NaN while the database cannot count them)",
            registry=self.registry,
        )
        self.governance_decisions = Counter(
            "aios_governance_decisions",
            "Decisions on governed actions (pre-checks), by action, by what the action got "
            "(decision: allowed or denied, after the enforcement mode) and by what the policy "
            "said (outcome: policy_allowed, policy_denied, no_policy, or policy_failed when "
            "it could not decide and governance failed closed)",
            ["action", "decision", "outcome"],
            registry=self.registry,
        )
        self.cluster_decisions = Counter(
            "aios_governance_cluster_decisions",
            f"Decisions on governed actions by cluster ({limit}) and decision",
            ["cluster_id", "decision"],
            registry=self.registry,
        )
        self.stability_checks = Counter(
            "aios_stability_checks",
            "Stability checks run by this process, by outcome (stable, unstable, or failed: "
            "the policy failed or did not answer is_stable, and the cluster counts as unstable)",
            ["outcome"],
            registry=self.registry,
        )
        self.unstable_clusters = Gauge(
            "aios_unstable_clusters",
            "Clusters whose latest stability check in this process said not stable",
            registry=self.registry,
        )
        self.last_stability_check = Gauge(
            "aios_stability_last_check_timestamp_seconds",
            "Unix time of this process's latest stability check (0 before the first)",
            registry=self.registry,
        )
        self.stability_interval = Gauge(
            "aios_stability_interval_seconds",
            "Interval of the stability checker of the controller's cluster (0 while it has no "
            "policy or is paused)",
            registry=self.registry,
        )
        self.remote_executions = Counter(
            "aios_remote_executions",
            "Policy executions sent to a remote executor through the policies system, by "
            "outcome (ok; failed: the policy failed there; unreachable: no answer; "
            "bad_answer: an answer without a result; not_configured)",
            ["outcome"],
            registry=self.registry,
        )
        self.remote_latency = Histogram(
            "aios_remote_execution_duration_seconds",
            "Wall time of one remote execution, network included",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        for outcome in STABILITY_OUTCOMES:
            self.stability_checks.labels(outcome=outcome)
        for outcome in REMOTE_OUTCOMES:
            self.remote_executions.labels(outcome=outcome)
        self._stability: dict[str, bool] = {}
        self._stability_lock = threading.Lock()

    def record_decision(self, outcome: str, seconds: float) -> None:
        self.decisions.labels(outcome=outcome).inc()
        self.latency.observe(seconds)

    def record_restart(self, reason: str) -> None:
        self.worker_restarts.labels(reason=reason).inc()

    def watch_database(self, healthy: Callable[[], bool]) -> None:
        """Report ``healthy()`` (read at each scrape) as aios_database_up."""
        self.database_up.set_function(lambda: 1.0 if healthy() else 0.0)

    def watch_registry(self, count: Callable[[], float]) -> None:
        """Report ``count()`` (read at each scrape, so it must not ask the database) as
        aios_registry_clusters."""
        self.registry_clusters.set_function(count)

    def record_governance(self, cluster_id: str, action: str, allowed: bool,
                          outcome: str) -> None:
        decision = "allowed" if allowed else "denied"
        self.governance_decisions.labels(action=action, decision=decision, outcome=outcome).inc()
        self.cluster_decisions.labels(cluster_id=self.cluster_label(cluster_id),
                                      decision=decision).inc()

    def record_stability(self, cluster_id: str, stable: bool, failed: bool = False) -> None:
        label = self.cluster_label(cluster_id)
        with self._stability_lock:
            self._stability[cluster_id] = stable
            shown = stable
            if label == OTHER_CLUSTERS:
                # The folded clusters are stable only when every one of them is.
                shown = all(v for k, v in self._stability.items()
                            if self.cluster_label(k) == OTHER_CLUSTERS)
            self.cluster_stable.labels(cluster_id=label).set(1 if shown else 0)
            self.unstable_clusters.set(sum(not v for v in self._stability.values()))
        outcome = "failed" if failed else "stable" if stable else "unstable"
        self.stability_checks.labels(outcome=outcome).inc()
        self.last_stability_check.set(time.time())

    def record_stability_interval(self, seconds: float) -> None:
        self.stability_interval.set(seconds)

    def record_remote(self, outcome: str, seconds: float) -> None:
        self.remote_executions.labels(outcome=outcome).inc()
        if outcome != "not_configured":
            self.remote_latency.observe(seconds)
