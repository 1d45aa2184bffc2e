"""Pre-check policies: the per-cluster action map, decisions, and governed updates.

A decision evaluates the policy mapped to an action against the action's input. It fails
closed: a missing policy, an error, a timeout, a result that is not a decision or a map
entry that cannot be read denies the action, with the reason. The cluster's enforcement
mode for the action then decides what a denial does: ``enforce`` (default, and what an
unreadable mode means) refuses it, ``warn`` lets it through but logs the denial,
``dryrun`` only evaluates. Every decision goes to the decision log, those of actions
without a policy too, and each records the sha256 of the code it ran; dry checks
(``POST /pre-check/{action}``) are marked ``dry_check``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from policy_runtime.clusters.document import NodeData, aggregate
from policy_runtime.clusters.operators import check_update
from policy_runtime.clusters.store import (
    ClusterConflict,
    ClusterNotFound,
    ClusterStore,
    InvalidCluster,
    normalised,
    validated,
)
from policy_runtime.executors.remote import RemoteExecution
from policy_runtime.governance.actions import (
    ACTIONS,
    ENFORCEMENT_MODES,
    PRECHECK,
    GovernanceField,
    answers,
    canonical,
    governance_paths,
    names_of,
    refuse_governance_changes,
)
from policy_runtime.governance.decisions import DecisionLog
from policy_runtime.metrics import RuntimeMetrics
from policy_runtime.service import PolicyNotFound, PolicyService


class MissingClusterId(ValueError):
    """No cluster_id was given and the controller has no AIOS_CLUSTER_ID."""


class UnknownPolicy(ValueError):
    """A pre-check map names a policy that is not published."""


class InvalidMapEntry(InvalidCluster):
    """A pre-check map entry (or an enforcement mode) that is not one of the accepted forms."""


ENTRY_FORMS = ('a policy URI string, {"policyRuleURI": "<uri>", "parameters": {...}}, '
               'or "" to remove')
NO_POLICY = "no pre-check policy mapped"


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
    # The sha256 of the code that decided ("" when no policy ran).
    code_sha256: str = ""
    # An evaluation asked for by POST /pre-check/{action}: nothing was applied.
    dry_check: bool = False
    # The action decided on, and the id of its decision-log entry ("" when not logged).
    action: str = ""
    decision_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def denial(self) -> dict[str, Any]:
        """What a refused governed action answers: why, by which policy, for which action
        and which decision-log entry; never the (possibly large) input."""
        return {
            "detail": self.reason or "denied by policy",
            "allowed": False,
            "reason": self.reason,
            "action": self.action,
            "policy_rule_uri": self.policy_rule_uri,
            "decision_id": self.decision_id,
            "enforcement": self.enforcement,
            "policy_allowed": self.policy_allowed,
            "code_sha256": self.code_sha256,
        }


@dataclass(frozen=True)
class Execution:
    """One run of a policy: its result, or the error that stopped it."""

    ok: bool
    result: Any
    error: str
    duration_ms: float
    keep_input: bool = False
    code_sha256: str = ""


class PolicyDenied(Exception):
    """A governed action refused by its pre-check policy."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(decision.reason or "denied by policy")
        self.decision = decision


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    return {dict: "an object", list: "a list", str: "a string"}.get(
        type(value), f"{type(value).__name__} {value!r}"
    )


def entry_problem(value: Any) -> str | None:
    """Why ``value`` is not a map entry we can run, or None when it is one (or "")."""
    if isinstance(value, str):
        return None
    if isinstance(value, dict):
        uri = value.get("policyRuleURI")
        if not isinstance(uri, str) or not uri:
            return 'an object without a "policyRuleURI" string'
        parameters = value.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            return f'an object whose "parameters" is {_kind(parameters)}, not an object'
        return None
    return _kind(value)


def map_entry(value: Any) -> dict[str, Any] | None:
    """A readable entry as ``{"policyRuleURI", "parameters"}``; None for "" or a bad entry."""
    if entry_problem(value) is not None or value == "":
        return None
    if isinstance(value, str):
        return {"policyRuleURI": value, "parameters": {}}
    return {"policyRuleURI": value["policyRuleURI"], "parameters": value.get("parameters") or {}}


def resolve_entry(config: Any, action: str) -> tuple[dict[str, Any] | None, str]:
    """(entry, "") for the action's policy, (None, "") when none is mapped, or
    (None, reason) when what the cluster stores cannot be read: the caller denies then.

    The map may predate validation or have been written by another tool, so nothing in
    it is trusted: the action's entry may sit under its name or upstream's alias.
    """
    mapping = config.get("actionsPolicyMap") if isinstance(config, dict) else None
    if mapping is None:
        return None, ""
    if not isinstance(mapping, dict):
        return None, (f"config.actionsPolicyMap is {_kind(mapping)}, not an object of "
                      "action -> policy (fail closed)")
    found: list[tuple[str, dict[str, Any]]] = []
    for key in names_of(action):
        if key not in mapping or mapping[key] == "":
            continue
        problem = entry_problem(mapping[key])
        if problem is not None:
            return None, (f"the pre-check map entry {key!r} is {problem}; set it to "
                          f"{ENTRY_FORMS} (fail closed)")
        entry = map_entry(mapping[key])
        assert entry is not None
        found.append((key, entry))
    if len({(e["policyRuleURI"], repr(e["parameters"])) for _, e in found}) > 1:
        keys = " and ".join(repr(key) for key, _ in found)
        return None, (f"the pre-check map holds different policies under {keys}; keep one "
                      "(fail closed)")
    return (found[0][1], "") if found else (None, "")


def enforcement_of(config: Any, action: str) -> str:
    """The action's enforcement mode; anything unreadable is ``enforce``."""
    modes = config.get("actionsEnforcement") if isinstance(config, dict) else None
    if not isinstance(modes, dict):
        return "enforce"
    for key in names_of(action):
        if modes.get(key) in ENFORCEMENT_MODES:
            return modes[key]
        if key in modes:
            return "enforce"
    return "enforce"


def check_entries(mapping: Any, where: str) -> None:
    """InvalidMapEntry (422) naming each governed action whose entry cannot be run."""
    if mapping is None:
        return
    if not isinstance(mapping, dict):
        raise InvalidMapEntry(
            f"{where} must be an object of action -> policy, not {_kind(mapping)}"
        )
    governed = set(ACTIONS) | {alias for action in ACTIONS for alias in names_of(action)}
    for key, value in mapping.items():
        if key in governed:
            problem = entry_problem(value)
            if problem is not None:
                raise InvalidMapEntry(f"{where}.{key}: {problem}; give {ENTRY_FORMS}")


def check_document_map(document: Any) -> None:
    """Validate the pre-check map a new cluster document brings with it."""
    config = document.get("config") if isinstance(document, dict) else None
    if isinstance(config, dict):
        check_entries(config.get("actionsPolicyMap"), "config.actionsPolicyMap")


def create_without_controller(
    store: ClusterStore, own_cluster_id: str, document: dict[str, Any]
) -> dict[str, Any]:
    """Creation by a runtime that serves ``clusters`` but not ``controller`` mode.

    It cannot evaluate policies, so when its own cluster (AIOS_CLUSTER_ID) maps an
    add_cluster policy, creation is refused: it goes through a controller instead.
    """
    check_document_map(document)
    if own_cluster_id:
        try:
            own = store.get(own_cluster_id)
        except ClusterNotFound:
            own = None
        config = (own or {}).get("config") or {}
        entry, problem = resolve_entry(config, "add_cluster")
        if entry is not None or problem:
            uri = entry["policyRuleURI"] if entry else ""
            reason = (f"cluster {own_cluster_id!r} governs add_cluster"
                      f"{' with ' + uri if uri else ''}, and this runtime does not serve "
                      "controller mode to evaluate it: create the cluster through a "
                      "controller (POST /clusters/create)")
            raise PolicyDenied(Decision(False, document, uri, 0.0, "enforce", reason, False,
                                        action="add_cluster"))
    return store.create(document)


class PrecheckService:
    """Decisions for one controller (its own cluster by default)."""

    def __init__(self, clusters: ClusterStore, policies: PolicyService, log: DecisionLog,
                 default_cluster_id: str = "", *, remote: RemoteExecution | None = None,
                 execution_mode: str = "local", executor_id: str = "",
                 metrics: RuntimeMetrics | None = None) -> None:
        self.clusters = clusters
        # Counts decisions and remote executions (None: not counted).
        self.metrics = metrics
        self.policies = policies
        self.log = log
        self.default_cluster_id = default_cluster_id
        self.remote = remote
        self.execution_mode = execution_mode
        self.executor_id = executor_id
        # Published URIs are never reused, so a URI's code hash never changes.
        self._remote_hashes: dict[str, str] = {}
        self._hashes_lock = threading.Lock()

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
        """Set the given actions' policies; "" removes one; others stay as they are.

        An entry is a URI or upstream's ``{"policyRuleURI", "parameters"}``; anything else
        is refused (422) before the map changes. An action's entry is kept under its own
        name: setting or removing it also drops what upstream's alias held.
        """
        resolved: dict[str, Any] = {}
        for action, value in changes.items():
            name = canonical(action)
            problem = entry_problem(value)
            if problem is not None:
                raise InvalidMapEntry(
                    f"{action}: the entry is {problem}; give {ENTRY_FORMS}"
                )
            entry = map_entry(value)
            if entry is not None and not self.is_published(cluster_id, entry["policyRuleURI"]):
                raise UnknownPolicy(
                    f"{action}: {self.policies.not_found_message(entry['policyRuleURI'])}"
                )
            if isinstance(value, dict):
                value = {"policyRuleURI": entry["policyRuleURI"],  # type: ignore[index]
                         "parameters": entry["parameters"]}  # type: ignore[index]
            resolved[name] = value

        def change(current: dict) -> dict:
            mapping = current["config"].get("actionsPolicyMap")
            mapping = dict(mapping) if isinstance(mapping, dict) else {}
            for action, value in resolved.items():
                for key in names_of(action):
                    mapping.pop(key, None)
                if value:
                    mapping[action] = value
            current["config"]["actionsPolicyMap"] = mapping
            return current

        return self.clusters.transform(cluster_id, change)["config"]["actionsPolicyMap"]

    def update_enforcement(self, cluster_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Set actions' enforcement modes; "" (or "enforce") returns one to the default."""
        resolved: dict[str, str] = {}
        for action, mode in changes.items():
            name = canonical(action)
            if mode != "" and mode not in ENFORCEMENT_MODES:
                raise InvalidMapEntry(
                    f"{action}: enforcement {mode!r} is not one of "
                    f"{', '.join(ENFORCEMENT_MODES)} (or \"\" for the default, enforce)"
                )
            resolved[name] = mode

        def change(current: dict) -> dict:
            modes = current["config"].get("actionsEnforcement")
            modes = dict(modes) if isinstance(modes, dict) else {}
            for action, mode in resolved.items():
                for key in names_of(action):
                    modes.pop(key, None)
                if mode and mode != "enforce":
                    modes[action] = mode
            current["config"]["actionsEnforcement"] = modes
            return current

        return self.clusters.transform(cluster_id, change)["config"]["actionsEnforcement"]

    def update_execution(self, cluster_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Set where the cluster's policies run: policyExecutionMode, policyExecutorId."""
        allowed = {"policyExecutionMode", "policyExecutorId"}
        unknown = sorted(set(changes) - allowed)
        if unknown or not changes:
            raise InvalidMapEntry(
                f"give policyExecutionMode (local or remote) and/or policyExecutorId"
                f"{'; unknown: ' + ', '.join(unknown) if unknown else ''}"
            )
        mode = changes.get("policyExecutionMode", "local")
        if mode not in ("local", "remote"):
            raise InvalidMapEntry(f"policyExecutionMode {mode!r}: give local or remote")
        if not isinstance(changes.get("policyExecutorId", ""), str):
            raise InvalidMapEntry("policyExecutorId must be a string (an executor id)")

        def change(current: dict) -> dict:
            current["config"].update(changes)
            return current

        config = self.clusters.transform(cluster_id, change)["config"]
        return {key: config.get(key) for key in sorted(allowed)}

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
               cluster: dict | None = None, *, dry_check: bool = False) -> Decision:
        """The action's decision, logged; ``dry_check`` marks an evaluation that applies
        nothing (``POST /pre-check/{action}``) so it cannot pass for a governed action."""
        action = canonical(action)
        cluster = cluster or self.clusters.get(cluster_id)
        config = cluster.get("config") if isinstance(cluster.get("config"), dict) else {}
        entry, problem = resolve_entry(config, action)
        enforcement = enforcement_of(config, action)
        uri, code_sha256, keep_input, duration = "", "", False, 0.0
        outcome = "policy_failed"  # what the policy said, for the metrics
        if entry is None and not problem:
            allowed, result_input, reason = True, input_data, NO_POLICY
            outcome = "no_policy"
        elif entry is None:
            allowed, result_input, reason = False, input_data, problem
        else:
            uri = entry["policyRuleURI"]
            policy_input = with_upstream_keys(action, input_data)
            run = self.execute(config, uri, policy_input, entry["parameters"],
                               cluster_id=cluster_id)
            if run.ok:
                allowed, result_input, reason = _interpret(run.result, input_data)
                if allowed and action == "add_node":
                    allowed, result_input, reason = _node_rewrite(input_data, result_input,
                                                                  reason)
                result_input = _without_added_keys(result_input, policy_input, input_data)
                said = run.result.get("allowed") if isinstance(run.result, dict) else None
                outcome = ("policy_allowed" if allowed
                           else "policy_denied" if said is False else "policy_failed")
            else:
                allowed, result_input, reason = False, input_data, f"{run.error} (fail closed)"
            duration, keep_input, code_sha256 = run.duration_ms, run.keep_input, run.code_sha256
        effective = allowed or enforcement in ("warn", "dryrun")
        decision = Decision(
            allowed=effective,
            input_data=result_input if allowed else input_data,
            policy_rule_uri=uri,
            duration_ms=duration,
            enforcement=enforcement,
            reason=reason,
            policy_allowed=allowed,
            code_sha256=code_sha256,
            dry_check=dry_check,
            action=action,
        )
        entry = self.log.record(
            cluster_id=cluster_id, action=action, policy_rule_uri=uri, allowed=allowed,
            enforcement=enforcement, duration_ms=duration, input_data=input_data, reason=reason,
            keep_input=keep_input, code_sha256=code_sha256, dry_check=dry_check,
        )
        if self.metrics is not None:
            self.metrics.record_governance(cluster_id, action, effective, outcome)
        return replace(decision, decision_id=str(entry.get("decision_id", "")))

    def execute(self, config: dict, uri: str, input_data: Any, parameters: dict,
                cluster_id: str | None = None) -> Execution:
        """Run a policy for a cluster, locally or on its remote executor; never raises.

        Locally, the policy's persisted ``context`` is the one kept for ``cluster_id``."""
        executor = self._executor(config)
        if executor is not None:
            if self.remote is None:
                self._count_remote("not_configured", 0.0)
                return Execution(False, None, "remote execution is not configured", 0.0)
            remote = self.remote.evaluate(executor, uri, input_data, parameters)
            self._count_remote(remote.outcome, remote.duration_ms / 1000)
            code_sha256 = self._remote_code_hash(uri)
            if not remote.ok:
                error = f"remote executor {executor}: {remote.error}"
                return Execution(False, None, error, remote.duration_ms, code_sha256=code_sha256)
            return Execution(True, remote.result, "", remote.duration_ms, code_sha256=code_sha256)
        try:
            policy = self.policies.get(uri)
        except PolicyNotFound:
            return Execution(False, None, f"policy {uri} is not published", 0.0)
        keep_input = bool((policy.get("policy_settings") or {}).get("log_input", False))
        code_sha256 = str(policy.get("code_sha256") or "")
        outcome = self.policies.evaluator.evaluate(
            policy, input_data, parameters=parameters, cluster_id=cluster_id
        )
        if not outcome.ok:
            error = outcome.error or {}
            message = f"{error.get('type')}: {error.get('message')}"
            return Execution(False, None, message, outcome.duration_ms, keep_input, code_sha256)
        return Execution(True, outcome.result, "", outcome.duration_ms, keep_input, code_sha256)

    def _count_remote(self, outcome: str, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.record_remote(outcome, seconds)

    def _remote_code_hash(self, uri: str) -> str:
        """The code hash the policies system holds for ``uri`` ("" when it cannot say)."""
        with self._hashes_lock:
            if uri in self._remote_hashes:
                return self._remote_hashes[uri]
        if self.remote is None or not self.remote.policies_url:
            return ""
        url = f"{self.remote.policies_url.rstrip('/')}/policies/{quote(uri, safe=':')}"
        token = self.remote.token
        try:
            response = httpx.get(url, headers={"Authorization": f"Bearer {token}"} if token
                                 else {}, timeout=self.remote.timeout_seconds)
            code_sha256 = str(response.json().get("code_sha256") or "")
        except (httpx.HTTPError, ValueError, AttributeError):
            return ""
        if response.status_code == 200 and code_sha256:
            with self._hashes_lock:
                self._remote_hashes[uri] = code_sha256
            return code_sha256
        return ""

    # -- governed actions ---------------------------------------------------------------
    def update_cluster(self, cluster_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Apply dotted-path fields if the update_cluster policy allows it.

        Governance settings are not among the fields it may change, whatever the policy
        says or rewrites the update into: they have routes of their own.
        """
        check_update({"$set": fields})
        touched = governance_paths(fields)
        if touched:
            raise GovernanceField(
                f"the governed update cannot change governance settings ({', '.join(touched)})"
                "; use the governance routes (POST /pre-check-policies/update, "
                "/pre-check-policies/enforcement, /pre-check-policies/execution, /mgmt)"
            )

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
            new = validated(self.clusters.preview(current, {"$set": update}))
            refuse_governance_changes(current, new, "the governed update", normalised)
            return new

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
        """Add a cluster, governed by the add_cluster policy of the controller's own cluster.

        Every route that creates a cluster comes here. The policy is the one the
        controller's own cluster (AIOS_CLUSTER_ID) maps to ``add_cluster`` (or upstream's
        ``create_cluster``); without an own cluster, or before it is registered, no policy
        is mapped (and, with an own cluster id, that is logged like any decision).
        """
        check_document_map(document)
        own_id = self.default_cluster_id
        if own_id:
            try:
                own = self.clusters.get(own_id)
            except ClusterNotFound:
                own = {"id": own_id, "config": {}}
            allowed = self._governed(own_id, "add_cluster", {"cluster": document}, own)
            rewritten = allowed.get("cluster", document)
            if rewritten is not document:
                check_document_map(rewritten)
            document = rewritten
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



# The node actions' inputs as upstream's gateway builds them (its cluster_db and
# membership_tools): the node under node_data, the cluster under cluster_data, and the
# cluster's metrics from its global metrics database, which this runtime has no client
# for: cluster_metrics is always null here (present, so that reading it never fails).
_NODE_ACTIONS = ("add_node", "remove_node")
_INPUT_KEYS = {"cluster_id", "node", "node_id", "cluster", "node_data", "cluster_data",
               "cluster_metrics"}


def with_upstream_keys(action: str, input_data: Any) -> Any:
    """The input of add_node / remove_node with upstream's keys beside ours: node_data
    (the same node as node), cluster_data (the same cluster as cluster) and
    cluster_metrics (null). Keys the input already has are kept; other actions' inputs
    are returned as they are."""
    if action not in _NODE_ACTIONS or not isinstance(input_data, dict):
        return input_data
    extra: dict[str, Any] = {"cluster_metrics": None}
    if action == "add_node" and "node" in input_data:
        extra["node_data"] = input_data["node"]
    if "cluster" in input_data:
        extra["cluster_data"] = input_data["cluster"]
    return {**extra, **input_data}


def rewritten_node(node: Any, returned: Any) -> tuple[Any, str]:
    """The node an allowed add_node adds, from the input_data its policy returned:
    (node, "") or (None, why it is ambiguous).

    A policy may rewrite the node under ``node`` (this runtime's key) or ``node_data``
    (upstream's); the one that differs from the given node is the rewrite, and two
    different rewrites are ambiguous. A returned input_data holding none of the input's
    keys but an ``id`` is the node itself, as upstream's gateway reads it.
    """
    if not isinstance(returned, dict):
        return node, ""
    if "id" in returned and not _INPUT_KEYS & set(returned):
        return returned, ""
    rewrites = [returned[key] for key in ("node", "node_data")
                if isinstance(returned.get(key), dict) and returned[key] != node]
    if len(rewrites) == 2 and rewrites[0] != rewrites[1]:
        return None, ("the policy's input_data rewrites the node differently under node "
                      "and node_data; rewrite one of them (fail closed)")
    return (rewrites[0] if rewrites else node), ""


def _without_added_keys(result_input: Any, policy_input: Any, input_data: Any) -> Any:
    """The input_data a decision answers, without the upstream keys the runtime added for
    the policy (a node rewrite under node_data is already under node): callers get back
    the keys they sent."""
    if not (isinstance(result_input, dict) and isinstance(policy_input, dict)
            and isinstance(input_data, dict)):
        return result_input
    added = policy_input.keys() - input_data.keys()
    if not added & result_input.keys():
        return result_input
    return {key: value for key, value in result_input.items() if key not in added}


def _node_rewrite(input_data: Any, result_input: Any, reason: str) -> tuple[bool, Any, str]:
    """An allowed add_node's result with the node it adds under node (and node_data)."""
    if not isinstance(input_data, dict):
        return True, result_input, reason
    node, problem = rewritten_node(input_data.get("node"), result_input)
    if problem:
        return False, input_data, problem
    base = result_input if isinstance(result_input, dict) and not (
        "id" in result_input and not _INPUT_KEYS & set(result_input)) else input_data
    return True, {**base, "node": node, "node_data": node}, reason


def _interpret(result: Any, input_data: Any) -> tuple[bool, Any, str]:
    """A pre-check result as (allowed, input_data, reason); anything else denies."""
    if not answers(PRECHECK, result):
        return False, input_data, (
            "the policy's result is not a decision {'allowed': bool, ...} (fail closed)"
        )
    reason = str(result.get("reason") or ("allowed" if result["allowed"] else "denied"))
    return result["allowed"], result.get("input_data", input_data), reason
