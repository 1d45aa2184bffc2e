"""Everything one runtime process holds: database, store, sandbox pool, metrics."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pymongo import MongoClient
from pymongo.errors import PyMongoError

from policy_runtime.clusters.store import ClusterStore
from policy_runtime.config import RunMode, Settings
from policy_runtime.evaluation import PolicyEvaluator
from policy_runtime.executors.registry import ExecutorRegistry
from policy_runtime.executors.remote import RemoteExecution
from policy_runtime.governance.decisions import DecisionLog
from policy_runtime.governance.mgmt import ManagementService
from policy_runtime.governance.nodes_source import KubernetesNodes
from policy_runtime.governance.precheck import PrecheckService
from policy_runtime.governance.stability import StabilityChecker
from policy_runtime.graphs.store import GraphStore
from policy_runtime.metrics import RuntimeMetrics
from policy_runtime.policy_source import PolicySource
from policy_runtime.sandbox.pool import WorkerPool
from policy_runtime.service import PolicyService
from policy_runtime.store import database
from policy_runtime.store.context import ContextStore
from policy_runtime.store.policies import PolicyStore

log = logging.getLogger(__name__)

_HEALTH_INTERVAL_SECONDS = 2.0
_STARTUP_DB_WAIT_SECONDS = 30.0


@dataclass
class Runtime:
    """The parts a process needs for its run modes; the others stay None."""

    settings: Settings
    client: MongoClient
    metrics: RuntimeMetrics
    pool: WorkerPool | None = None
    policies: PolicyService | None = None
    clusters: ClusterStore | None = None
    precheck: PrecheckService | None = None
    executors: ExecutorRegistry | None = None
    stability: StabilityChecker | None = None
    management: ManagementService | None = None
    graphs: GraphStore | None = None
    # What this process sends to the policies system and executors.
    remote_token: str | None = None
    database_healthy: bool = True
    # clusters in the registry, counted by the health watcher (NaN until it has, or while
    # the database is away): /metrics reads it without asking the database
    registry_clusters: float = math.nan
    _stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def start(cls, settings: Settings) -> Runtime:
        client = database.connect(settings.mongo_uri, settings.db_timeout_seconds)
        db = client[settings.db_name]
        runtime = cls(settings, client, RuntimeMetrics(settings.metrics_max_clusters))
        runtime.metrics.watch_database(lambda: runtime.database_healthy)
        # Without a remote token of its own a process sends its bootstrap token, unless it
        # has none it could share (scoped tokens only): then it sends none.
        runtime.remote_token = (
            settings.remote_token.get_secret_value() if settings.remote_token
            else None if settings.scoped_tokens_only
            else settings.resolve_token()
        )
        modes = set(settings.run_modes)
        # The controller governs clusters with policies: it needs both stores.
        if modes & {RunMode.CLUSTERS, RunMode.CONTROLLER}:
            runtime.clusters = ClusterStore(db, settings.query_timeout_seconds)
            _ensure_indexes(runtime.clusters.ensure_indexes)
        if RunMode.CLUSTERS in modes:
            runtime.metrics.watch_registry(lambda: runtime.registry_clusters)
        if modes & {RunMode.POLICIES, RunMode.CONTROLLER}:
            store = PolicyStore(db)
            _ensure_indexes(store.ensure_indexes)
            runtime.executors = ExecutorRegistry(db)
            _ensure_indexes(runtime.executors.ensure_indexes)
            runtime.pool = WorkerPool(
                settings.pool_size,
                settings.max_memory_mb,
                queue_timeout_seconds=settings.queue_timeout_seconds,
                on_restart=runtime.metrics.record_restart,
            ).start()
            runtime.policies = PolicyService(
                store,
                PolicyEvaluator(
                    runtime.pool, settings.limits,
                    ContextStore(db, settings.policy_context_max_bytes),
                ),
                runtime.metrics,
                max_code_bytes=settings.max_code_bytes,
                cache_seconds=settings.policy_cache_seconds,
                source=_policy_source(settings),
            )
        if RunMode.POLICIES in modes:  # upstream's graphs registry, beside its policies
            runtime.graphs = GraphStore(db)
            _ensure_indexes(runtime.graphs.ensure_indexes)
        if RunMode.CONTROLLER in modes:
            log_ = DecisionLog(db, settings.decision_log_max_entries)
            _ensure_indexes(log_.ensure_collection)
            runtime.precheck = PrecheckService(
                runtime.clusters, runtime.policies, log_, settings.cluster_id,
                remote=RemoteExecution(
                    settings.policies_url, runtime.remote_token, settings.remote_timeout_seconds
                ),
                execution_mode=settings.policy_execution_mode,
                executor_id=settings.policy_system_executor_id,
                metrics=runtime.metrics,
            )
            runtime.stability = StabilityChecker(
                db, runtime.precheck, runtime.metrics, settings.cluster_id,
                live_nodes=KubernetesNodes() if settings.nodes_source == "kubernetes" else None,
            )
            runtime.management = ManagementService(runtime.stability)
            runtime.stability.start()
        threading.Thread(target=runtime._watch_database, name="db-health", daemon=True).start()
        return runtime

    def _watch_database(self) -> None:
        # /healthz reads this flag instead of pinging, so health checks stay cheap.
        while not self._stop.wait(_HEALTH_INTERVAL_SECONDS):
            healthy = database.ping(self.client)
            if healthy != self.database_healthy:
                log.warning("database %s", "reachable again" if healthy else "unreachable")
            self.database_healthy = healthy
            self._count_registry(healthy)

    def _count_registry(self, healthy: bool) -> None:
        if self.clusters is None or RunMode.CLUSTERS not in self.settings.run_modes:
            return
        try:
            self.registry_clusters = float(self.clusters.count()) if healthy else math.nan
        except PyMongoError:
            self.registry_clusters = math.nan

    def close(self) -> None:
        self._stop.set()
        if self.stability is not None:
            self.stability.stop()
        if self.pool is not None:
            self.pool.close()
        self.client.close()


def _policy_source(settings: Settings) -> PolicySource | None:
    """Where lookup misses are read from, when configured (Settings checked the token file)."""
    if not settings.policy_source_url.strip() or settings.policy_source_token_file is None:
        return None
    return PolicySource(
        settings.policy_source_url.strip(), settings.policy_source_token_file,
        timeout_seconds=settings.remote_timeout_seconds,
        # a policy document holds its code and its metadata, which came in one request body
        max_bytes=settings.max_body_bytes + settings.max_code_bytes,
    )


def _ensure_indexes(ensure: Callable[[], None]) -> None:
    """Create indexes, waiting up to 30 s for the database to come up."""
    deadline = time.monotonic() + _STARTUP_DB_WAIT_SECONDS
    while True:
        try:
            ensure()
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the database is unreachable: {exc}") from None
            log.warning("waiting for the database: %s", exc)
            time.sleep(1.0)
