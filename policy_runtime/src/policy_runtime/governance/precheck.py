"""Pre-check policies: the per-cluster action map, decisions, and governed updates.

A decision evaluates the policy mapped to an action against the action's input. It fails
closed: a missing policy, an error, a timeout or a result that is not a decision denies
the action, with the reason. The cluster's enforcement mode for the action then decides
what a denial does: ``enforce`` (default) refuses it, ``warn`` lets it through but logs
the denial, ``dryrun`` only evaluates. Every decision goes to the decision log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import ValidationError

from policy_runtime.clusters.document import NodeData, aggregate
from policy_runtime.clusters.operators import check_update
from policy_runtime.clusters.store import (
    ClusterConflict,
    ClusterNotFound,
    ClusterStore,
    InvalidCluster,
)
from policy_runtime.executors.remote import RemoteExecution
from policy_runtime.governance.actions import canonical
from policy_runtime.governance.decisions import DecisionLog
from policy_runtime.service import PolicyNotFound, PolicyService


class MissingClusterId(ValueError):
    """No cluster_id was given and the controller has no AIOS_CLUSTER_ID."""


class UnknownPolicy(ValueError):
    """A pre-check map names a policy that is not published."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    input_data: Any
    policy_rule_uri: str
    duration_ms: float
    enforcement: str = "enforce"
    reason: str = ""
    # What the policy itself said, before the enforcement mode applied.
    policy_allowed: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Execution:
    """One run of a policy: its result, or the error that stopped it."""

    ok: bool
    result: Any
    error: str
    duration_ms: float
    keep_input: bool = False


class PolicyDenied(Exception):
    """A governed action refused by its pre-check policy."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason or "denied by policy")
        self.decision = decision


def map_entry(value: Any) -> dict[str, Any] | None:
    """A map entry as ``{"policyRuleURI", "parameters"}``: upstream stores a URI string or that."""
    if isinstance(value, str):
        return {"policyRuleURI": value, "parameters": {}} if value else None
    if isinstance(value, dict) and value.get("policyRuleURI"):
        return {"policyRuleURI": value["policyRuleURI"],
                "parameters": value.get("parameters") or {}}
    return None


class PrecheckService:
    """Decisions for one controller (its own cluster by default)."""

    def __init__(self, clusters: ClusterStore, policies: PolicyService, log: DecisionLog,
                 default_cluster_id: str = "", *, remote: RemoteExecution | None = None,
                 execution_mode: str = "local", executor_id: str = "") -> None:
        self.clusters = clusters
        self.policies = policies
        self.log = log
        self.default_cluster_id = default_cluster_id
        self.remote = remote
        self.execution_mode = execution_mode
        self.executor_id = executor_id

    def _executor(self, config: dict) -> str | None:
        """The executor to use for this cluster, or None to evaluate locally.

        Remote when the cluster's config or the controller's POLICY_EXECUTION_MODE says so;
        the cluster's policyExecutorId wins over POLICY_SYSTEM_EXECUTOR_ID.
        """
        if "remote" not in (config.get("policyExecutionMode"), self.execution_mode):
            return None
        return config.get("policyExecutorId") or self.executor_id

    def cluster_id(self, given: str | None) -> str:
        cluster_id = given or self.default_cluster_id
        if not cluster_id:
            raise MissingClusterId("give cluster_id, or set AIOS_CLUSTER_ID on the controller")
        return cluster_id

    # -- the map ----------------------------------------------------------------------
    def policy_map(self, cluster_id: str) -> dict[str, Any]:
        config = self.clusters.get(cluster_id)["config"]
        return config.get("actionsPolicyMap") or {}

    def update_map(self, cluster_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Set the given actions' policies; "" removes one; others stay as they are."""
        resolved: dict[str, str] = {}
        for action, uri in changes.items():
            name = canonical(action)
            if not isinstance(uri, str):
                raise UnknownPolicy(f'{action}: give a policy_rule_uri string, or "" to remove')
            if uri and not self.is_published(cluster_id, uri):
                raise UnknownPolicy(f"{action}: no policy is published as {uri!r}")
            resolved[name] = uri

        def change(current: dict) -> dict:
            mapping = dict(current["config"].get("actionsPolicyMap") or {})
            for action, uri in resolved.items():
                if uri:
                    mapping[action] = uri
                else:
                    mapping.pop(action, None)
            current["config"]["actionsPolicyMap"] = mapping
            return current

        return self.clusters.transform(cluster_id, change)["config"]["actionsPolicyMap"]

    def is_published(self, cluster_id: str, uri: str) -> bool:
        config = self.clusters.get(cluster_id)["config"]
        if self._executor(config) is not None and self.remote is not None:
            return self.remote.policy_exists(uri)
        try:
            self.policies.get(uri)
        except PolicyNotFound:
            return False
        return True

    # -- decisions ----------------------------------------------------------------------
    def decide(self, cluster_id: str, action: str, input_data: Any,
               cluster: dict | None = None) -> Decision:
        action = canonical(action)
        cluster = cluster or self.clusters.get(cluster_id)
        config = cluster["config"]
        entry = map_entry((config.get("actionsPolicyMap") or {}).get(action))
        enforcement = (config.get("actionsEnforcement") or {}).get(action, "enforce")
        if entry is None:
            return Decision(True, input_data, "", 0.0, enforcement, "no pre-check policy mapped")
        uri = entry["policyRuleURI"]
        run = self.execute(config, uri, input_data, entry["parameters"])
        if run.ok:
            allowed, result_input, reason = _interpret(run.result, input_data)
        else:
            allowed, result_input, reason = False, input_data, f"{run.error} (fail closed)"
        duration, keep_input = run.duration_ms, run.keep_input
        effective = allowed or enforcement in ("warn", "dryrun")
        decision = Decision(
            allowed=effective,
            input_data=result_input if allowed else input_data,
            policy_rule_uri=uri,
            duration_ms=duration,
            enforcement=enforcement,
            reason=reason,
            policy_allowed=allowed,
        )
        self.log.record(
            cluster_id=cluster_id, action=action, policy_rule_uri=uri, allowed=allowed,
            enforcement=enforcement, duration_ms=duration, input_data=input_data, reason=reason,
            keep_input=keep_input,
        )
        return decision

    def execute(self, config: dict, uri: str, input_data: Any, parameters: dict) -> Execution:
        """Run a policy for a cluster, locally or on its remote executor; never raises."""
        executor = self._executor(config)
        if executor is not None:
            if self.remote is None:
                return Execution(False, None, "remote execution is not configured", 0.0)
            remote = self.remote.evaluate(executor, uri, input_data, parameters)
            if not remote.ok:
                error = f"remote executor {executor}: {remote.error}"
                return Execution(False, None, error, remote.duration_ms)
            return Execution(True, remote.result, "", remote.duration_ms)
        try:
            policy = self.policies.get(uri)
        except PolicyNotFound:
            return Execution(False, None, f"policy {uri} is not published", 0.0)
        keep_input = bool((policy.get("policy_settings") or {}).get("log_input", False))
        outcome = self.policies.evaluator.evaluate(policy, input_data, parameters=parameters)
        if not outcome.ok:
            error = outcome.error or {}
            message = f"{error.get('type')}: {error.get('message')}"
            return Execution(False, None, message, outcome.duration_ms, keep_input)
        return Execution(True, outcome.result, "", outcome.duration_ms, keep_input)

    # -- governed actions ---------------------------------------------------------------
    def update_cluster(self, cluster_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Apply dotted-path fields (seeds/001) if the update_cluster policy allows it."""
        check_update({"$set": fields})

        def change(current: dict) -> dict:
            decision = self.decide(
                cluster_id, "update_cluster",
                {"cluster_id": cluster_id, "update": fields, "cluster": current}, current,
            )
            if not decision.allowed:
                raise PolicyDenied(decision)
            update = fields
            if isinstance(decision.input_data, dict) and isinstance(
                decision.input_data.get("update"), dict
            ):
                update = decision.input_data["update"]  # the policy may rewrite it
            check_update({"$set": update})
            return self.clusters.preview(current, {"$set": update})

        return self.clusters.transform(cluster_id, change)

    def _governed(self, cluster_id: str, action: str, input_data: dict, current: dict) -> Any:
        """The (possibly rewritten) input of an allowed action; PolicyDenied otherwise."""
        decision = self.decide(cluster_id, action, input_data, current)
        if not decision.allowed:
            raise PolicyDenied(decision)
        return decision.input_data if isinstance(decision.input_data, dict) else input_data

    def add_node(self, cluster_id: str, node: dict[str, Any]) -> dict[str, Any]:
        """Add a node if the add_node policy allows it; the totals are recomputed."""

        def change(current: dict) -> dict:
            allowed = self._governed(
                cluster_id, "add_node",
                {"cluster_id": cluster_id, "node": node, "cluster": current}, current,
            )
            new_node = NodeData.model_validate(allowed.get("node", node))
            nodes = [NodeData.model_validate(n) for n in current["nodes"]["nodeData"]]
            if any(n.id == new_node.id for n in nodes):
                raise ClusterConflict(f"cluster {cluster_id!r} already has a node {new_node.id!r}")
            return {**current, **aggregate([*nodes, new_node])}

        return self.clusters.transform(cluster_id, _validating(change))

    def remove_node(self, cluster_id: str, node_id: str) -> dict[str, Any]:
        """Remove a node if the remove_node policy allows it; the totals are recomputed."""

        def change(current: dict) -> dict:
            nodes = [NodeData.model_validate(n) for n in current["nodes"]["nodeData"]]
            if not any(n.id == node_id for n in nodes):
                raise ClusterNotFound(f"cluster {cluster_id!r} has no node {node_id!r}")
            self._governed(
                cluster_id, "remove_node",
                {"cluster_id": cluster_id, "node_id": node_id, "cluster": current}, current,
            )
            return {**current, **aggregate([n for n in nodes if n.id != node_id])}

        return self.clusters.transform(cluster_id, change)

    def create_cluster(self, document: dict[str, Any]) -> dict[str, Any]:
        """Add a cluster, governed by the add_cluster policy of the controller's own cluster."""
        if self.default_cluster_id:
            own = self.clusters.get(self.default_cluster_id)
            allowed = self._governed(
                self.default_cluster_id, "add_cluster", {"cluster": document}, own
            )
            document = allowed.get("cluster", document)
        return self.clusters.create(document)


def _validating(change: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """Report node documents that do not match the model as InvalidCluster (422)."""

    def wrapped(current: dict) -> dict:
        try:
            return change(current)
        except ValidationError as exc:
            where = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise InvalidCluster(f"the node is invalid: {where}") from None

    return wrapped



def _interpret(result: Any, input_data: Any) -> tuple[bool, Any, str]:
    """A pre-check result as (allowed, input_data, reason); anything else denies."""
    if not isinstance(result, dict) or not isinstance(result.get("allowed"), bool):
        return False, input_data, (
            "the policy's result is not a decision {'allowed': bool, ...} (fail closed)"
        )
    reason = str(result.get("reason") or ("allowed" if result["allowed"] else "denied"))
    return result["allowed"], result.get("input_data", input_data), reason
