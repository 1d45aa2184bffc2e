"""The stability checker: a controller's background loop over its cluster's stability policy.

The policy is configured in the cluster document's ``config.stabilityChecker``
(``{"policyRuleURI", "parameters", "interval", "paused"}``, as upstream stores it) and
receives ``{"cluster_data": <cluster document>, "cluster": <the same>, "nodes_data":
[...]}`` (``cluster`` is the key upstream's checker uses); it returns
``{"is_stable": bool, "stability_check_data": {...}}``. Node data is pushed with
``PUT /nodes-data``. When the controller runs as several replicas, a lease document in
MongoDB elects the one that runs the loop; another takes over when the lease expires
(two intervals). Intervals are bounded (``MIN_INTERVAL_SECONDS`` to
``MAX_INTERVAL_SECONDS``; a stored value outside, or not a number, counts as the default),
and a lease that claims to run longer than two maximal intervals is treated as expired,
so no stored value can stop the loop.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from policy_runtime.governance.actions import STABILITY_CHECKER, answers
from policy_runtime.governance.precheck import PrecheckService
from policy_runtime.metrics import RuntimeMetrics

log = logging.getLogger(__name__)
TICK_SECONDS = 0.2
IDLE_POLL_SECONDS = 1.0
DEFAULT_INTERVAL_SECONDS = 60.0
MIN_INTERVAL_SECONDS = TICK_SECONDS
MAX_INTERVAL_SECONDS = 86_400.0
# No valid lease runs longer: one for later is a leftover of a bad value, and expired.
MAX_LEASE_SECONDS = 2 * MAX_INTERVAL_SECONDS


def _now() -> float:
    return time.time()


def check_input(cluster: dict[str, Any], nodes: list[Any]) -> dict[str, Any]:
    """What a stability policy gets: the cluster under ``cluster_data`` and, as upstream's
    stability checker hands it (its monitor's evaluate), under ``cluster`` too; the node
    data under ``nodes_data``. Policies written for either read what they expect."""
    return {"cluster_data": cluster, "cluster": cluster, "nodes_data": nodes}


def interval_of(checker: dict) -> float:
    """The configured interval, or the default when it is missing or out of bounds."""
    value = checker.get("interval")
    if value is None:
        return DEFAULT_INTERVAL_SECONDS
    if (
        isinstance(value, bool) or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not MIN_INTERVAL_SECONDS <= value <= MAX_INTERVAL_SECONDS
    ):
        log.warning("stability checker interval %r is out of bounds (%g to %g s); using %g s",
                    value, MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS,
                    DEFAULT_INTERVAL_SECONDS)
        return DEFAULT_INTERVAL_SECONDS
    return float(value)


class StabilityChecker:
    """Runs checks, stores the latest result, and holds the lease of the loop."""

    def __init__(self, db: Database, precheck: PrecheckService, metrics: RuntimeMetrics,
                 cluster_id: str, live_nodes: Callable[[str], list] | None = None) -> None:
        self.results = db["stability_results"]
        self.nodes = db["nodes_data"]
        self.leases = db["leases"]
        self.precheck = precheck
        self.metrics = metrics
        self.cluster_id = cluster_id
        # None: the pushed node data; else a live source (nodes_source.KubernetesNodes).
        self.live_nodes = live_nodes
        self.runner = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- node data ---------------------------------------------------------------------
    def put_nodes(self, cluster_id: str, nodes: list[Any]) -> None:
        self.precheck.clusters.get(cluster_id)  # 404 for unknown clusters
        self.nodes.replace_one(
            {"_id": cluster_id},
            {"_id": cluster_id, "nodes": nodes, "updated_at": datetime.now(UTC).isoformat()},
            upsert=True,
        )

    def nodes_data(self, cluster_id: str) -> list[Any]:
        if self.live_nodes is not None:
            return self.live_nodes(cluster_id)
        document = self.nodes.find_one({"_id": cluster_id})
        return document["nodes"] if document else []

    # -- checks ------------------------------------------------------------------------
    def run_check(self, cluster_id: str) -> dict[str, Any]:
        """Evaluate the configured policy now and store the result."""
        cluster = self.precheck.clusters.get(cluster_id)
        checker = cluster["config"].get("stabilityChecker") or {}
        uri = checker.get("policyRuleURI") or ""
        if not uri:
            raise NoStabilityPolicy(
                f"cluster {cluster_id!r} has no stability policy: "
                'POST /mgmt {"service": "stability_checker", "mgmt_action": "set_policy", ...}'
            )
        run = self.precheck.execute(
            cluster["config"], uri, check_input(cluster, self.nodes_data(cluster_id)),
            checker.get("parameters") or {}, cluster_id=cluster_id,
        )
        result = run.result if run.ok else None
        answered = answers(STABILITY_CHECKER, result)
        if answered:
            stable, data = result["is_stable"], result.get("stability_check_data") or {}
        else:
            # A failing or malformed check reports the cluster as not stable, with the reason.
            reason = run.error if not run.ok else "the policy's result has no boolean is_stable"
            stable, data = False, {"error": reason}
        entry = {
            "cluster_id": cluster_id,
            "is_stable": stable,
            "stability_check_data": data,
            "checked_at": datetime.now(UTC).isoformat(),
            "policy_rule_uri": uri,
            "duration_ms": round(run.duration_ms, 3),
            "runner": self.runner,
        }
        self.results.replace_one({"_id": cluster_id}, {"_id": cluster_id, **entry}, upsert=True)
        self.metrics.record_stability(cluster_id, stable, failed=not answered)
        return entry

    def latest(self, cluster_id: str) -> dict[str, Any]:
        document = self.results.find_one({"_id": cluster_id}, {"_id": 0})
        if document is None:
            raise NoStabilityResult(f"no stability check has run for cluster {cluster_id!r} yet")
        return document

    # -- the loop ----------------------------------------------------------------------
    def acquire_lease(self, cluster_id: str, seconds: float) -> bool:
        """Become (or stay) the runner for ``seconds``; False while another holds it.

        A lease expiring beyond ``MAX_LEASE_SECONDS`` from now is invalid and taken over.
        """
        now = _now()
        seconds = min(seconds, MAX_LEASE_SECONDS)
        try:
            self.leases.find_one_and_update(
                {"_id": f"stability:{cluster_id}",
                 "$or": [{"holder": self.runner}, {"expires_at": {"$lt": now}},
                         {"expires_at": {"$gt": now + MAX_LEASE_SECONDS}}]},
                {"$set": {"holder": self.runner, "expires_at": now + seconds}},
                upsert=True, return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            return False  # held by another replica, not expired
        return True

    def start(self) -> None:
        if self.cluster_id:
            self._thread = threading.Thread(target=self._loop, name="stability", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        # The configuration is read every IDLE_POLL_SECONDS whether or not a check is due,
        # so a new interval, policy or pause takes effect within a second, not only once
        # the interval it replaces has run out.
        next_look = 0.0
        last_check: float | None = None
        while not self._stop.wait(TICK_SECONDS):
            now = _now()
            if now < next_look:
                continue
            next_look = now + IDLE_POLL_SECONDS
            try:
                checker = self.precheck.clusters.get(self.cluster_id)["config"].get(
                    "stabilityChecker") or {}
                running = bool(checker.get("policyRuleURI") and not checker.get("paused"))
                interval = interval_of(checker) if running else 0.0
                # What the checker-not-running alert compares the last check's age with.
                self.metrics.record_stability_interval(interval)
                if running:  # an interval shorter than the poll is kept too
                    next_look = now + min(IDLE_POLL_SECONDS, interval)
                if running and (last_check is None or now >= last_check + interval):
                    # counted from this attempt, even when it fails or another replica
                    # holds the lease: the next one is an interval later
                    last_check = now
                    if self.acquire_lease(self.cluster_id, 2 * interval):
                        self.run_check(self.cluster_id)
            except Exception as exc:  # the loop must outlive any one failure
                log.warning("stability check of %s failed: %s", self.cluster_id, exc)


class NoStabilityPolicy(LookupError):
    """The cluster has no stability policy configured."""


class NoStabilityResult(LookupError):
    """No check has run yet."""
