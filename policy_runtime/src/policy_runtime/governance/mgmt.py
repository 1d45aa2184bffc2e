"""``POST /mgmt``: management commands of a controller's services (the stability checker).

Every command's ``mgmt_data`` is checked before anything changes: ``set_interval`` takes
an interval from ``MIN_INTERVAL_SECONDS`` to ``MAX_INTERVAL_SECONDS``, ``set_policy``'s
``parameters`` must match the policy's ``policy_parameters_schema``, and commands passed
on to the policy must match the schema it declares for them in
``management_commands_schema``. Out-of-range data answers 422 naming the field.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.exceptions import RequestValidationError

from policy_runtime import schemas
from policy_runtime.errors import InvalidInput, PolicyError
from policy_runtime.governance.precheck import PrecheckService, UnknownPolicy, resolve_entry
from policy_runtime.governance.stability import (
    MAX_INTERVAL_SECONDS,
    MIN_INTERVAL_SECONDS,
    StabilityChecker,
)

SERVICES = ("stability_checker",)
BUILT_IN = ("set_policy", "set_interval", "pause", "resume", "run_now")
MAX_URI_LENGTH = 512


class BadCommand(ValueError):
    """A management command that cannot be carried out as given."""


def _invalid(field: str | None, message: str, value: Any) -> RequestValidationError:
    """A 422 naming ``mgmt_data.<field>``, as FastAPI reports invalid request bodies."""
    loc = ("body", "mgmt_data", *([field] if field else []))
    return RequestValidationError(
        [{"type": "value_error", "loc": loc, "msg": message, "input": value}]
    )


def _interval(data: dict) -> float:
    seconds = data.get("interval_seconds")
    if (
        isinstance(seconds, bool) or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or not MIN_INTERVAL_SECONDS <= seconds <= MAX_INTERVAL_SECONDS
    ):
        raise _invalid(
            "interval_seconds",
            f"set_interval needs interval_seconds, a number of seconds from "
            f"{MIN_INTERVAL_SECONDS:g} to {MAX_INTERVAL_SECONDS:g}",
            seconds,
        )
    return seconds


def _matching(schema: Any, data: Any, what: str, field: str | None) -> None:
    """422 unless ``data`` matches ``schema`` (a policy's declared JSON Schema)."""
    if not isinstance(schema, dict) or not schema:
        return
    try:
        schemas.validate(schema, data, what=what)
    except InvalidInput as exc:
        raise _invalid(field, str(exc), data) from None


def _changed_parameters(policy: dict, parameters: dict, result: Any) -> dict | None:
    """The parameters a management command set, when it set any, else None.

    A fresh instance serves every call, so what ``management()`` changes on it is gone
    afterwards. A command has a lasting effect through its result: a successful result
    (no ``status``, or ``"success"``) holding ``parameters`` (an object) gives the policy's
    parameters for this cluster from now on, for every check and every later command.
    They must match the policy's ``policy_parameters_schema``.
    """
    if not isinstance(result, dict) or not isinstance(result.get("parameters"), dict):
        return None
    if result.get("status", "success") != "success":
        return None
    merged = {**(policy.get("policy_parameters") or {}), **parameters}
    new = result["parameters"]
    if {**merged, **new} == merged:
        return None  # a read, or a change to what is already in force
    try:
        schemas.validate(policy.get("policy_parameters_schema"),
                         {**merged, **new}, what="parameters")
    except InvalidInput as exc:
        raise PolicyError(f"management() answered parameters that do not match "
                          f"policy_parameters_schema: {exc}") from None
    return {**parameters, **{k: v for k, v in new.items() if merged.get(k) != v}}


class ManagementService:
    def __init__(self, checker: StabilityChecker) -> None:
        self.checker = checker
        self.clusters = checker.precheck.clusters

    def handle(self, cluster_id: str, service: str, action: str, data: Any) -> dict[str, Any]:
        if service not in SERVICES:
            raise BadCommand(f"unknown service {service!r}; services: {', '.join(SERVICES)}")
        data = data if isinstance(data, dict) else {}
        if action == "run_now":
            return self.checker.run_check(cluster_id)
        if action in BUILT_IN:
            return self._configure(cluster_id, action, data)
        return self._forward(cluster_id, action, data)

    def _configure(self, cluster_id: str, action: str, data: dict) -> dict[str, Any]:
        """The checker's settings after the command, and whether it changed them (so that
        clients such as the cluster_mgmt module can report an exact ``changed``)."""
        changes: dict[str, Any]
        if action == "set_policy":
            uri = data.get("policy_rule_uri")
            if not isinstance(uri, str) or not uri:
                raise BadCommand(
                    'set_policy needs mgmt_data {"policy_rule_uri": ..., "parameters"?}'
                )
            if len(uri) > MAX_URI_LENGTH:
                raise _invalid("policy_rule_uri", f"at most {MAX_URI_LENGTH} characters", uri)
            parameters = data.get("parameters") or {}
            if not isinstance(parameters, dict):
                raise _invalid("parameters", "parameters must be an object", parameters)
            if not self.checker.precheck.is_published(cluster_id, uri):
                raise UnknownPolicy(self.checker.precheck.policies.not_found_message(uri))
            policy = self.checker.precheck.policies.get(uri)
            _matching(
                policy.get("policy_parameters_schema"),
                {**(policy.get("policy_parameters") or {}), **parameters},
                "parameters", "parameters",
            )
            changes = {"policyRuleURI": uri, "parameters": parameters}
        elif action == "set_interval":
            changes = {"interval": _interval(data)}
        else:
            changes = {"paused": action == "pause"}

        before: dict[str, Any] = {}

        def change(current: dict) -> dict:
            before.clear()
            before.update(current["config"].get("stabilityChecker") or {})
            current["config"]["stabilityChecker"] = {**before, **changes}
            return current

        after = self.clusters.transform(cluster_id, change)["config"]["stabilityChecker"]
        return {"stabilityChecker": after, "changed": after != before}

    def _forward(self, cluster_id: str, action: str, data: dict) -> dict[str, Any]:
        """Any other action goes to the policy's management(action, data), sandboxed."""
        checker = self.clusters.get(cluster_id)["config"].get("stabilityChecker") or {}
        uri = checker.get("policyRuleURI")
        if not uri:
            raise BadCommand(f"{action}: the cluster has no stability policy to manage")
        precheck = self.checker.precheck
        policy = precheck.policies.get(uri)
        for command in policy.get("management_commands_schema") or []:
            if isinstance(command, dict) and command.get("name") == action:
                _matching(command.get("schema"), data, f"{action} mgmt_data", None)
        parameters = checker.get("parameters") or {}
        outcome = precheck.policies.evaluator.manage(policy, action, data, parameters=parameters)
        if not outcome.ok:
            error = outcome.error or {}
            raise PolicyError(f"{error.get('type')}: {error.get('message')}")
        answer: dict[str, Any] = {"result": outcome.result}
        changed = _changed_parameters(policy, parameters, outcome.result)
        if changed is not None:
            answer["stabilityChecker"] = self._keep_parameters(cluster_id, uri, changed)
        return answer

    def _keep_parameters(self, cluster_id: str, uri: str, parameters: dict) -> dict[str, Any]:
        """Store the parameters a management command set as this cluster's parameters of
        the policy, unless the cluster meanwhile runs another policy."""

        def change(current: dict) -> dict:
            checker = current["config"].get("stabilityChecker") or {}
            if checker.get("policyRuleURI") != uri:
                raise BadCommand("the cluster's stability policy changed meanwhile; retry")
            current["config"]["stabilityChecker"] = {**checker, "parameters": parameters}
            return current

        return self.clusters.transform(cluster_id, change)["config"]["stabilityChecker"]


def manage_pre_check_policy(
    precheck: PrecheckService, cluster_id: str, action: str, mgmt_action: str, data: Any
) -> Any:
    """A management command for the policy a cluster maps to a governed action (upstream's
    gateway serves them for add_node and remove_node): the policy's
    ``management(mgmt_action, mgmt_data)`` in the sandbox, with the map entry's
    parameters, ``mgmt_data`` checked against the schema the policy declares for it.
    Nothing is stored: a pre-check policy keeps no state between calls."""
    if not isinstance(mgmt_action, str) or not mgmt_action or len(mgmt_action) > 128:
        raise _invalid(None, "mgmt_action must be a command name (1 to 128 characters)",
                       mgmt_action)
    data = data if data is not None else {}
    config = precheck.clusters.get(cluster_id).get("config")
    entry, problem = resolve_entry(config, action)
    if problem:
        raise BadCommand(problem)
    if entry is None:
        raise BadCommand(f"cluster {cluster_id!r} maps no {action} policy to manage")
    policy = precheck.policies.get(entry["policyRuleURI"])
    for command in policy.get("management_commands_schema") or []:
        if isinstance(command, dict) and command.get("name") == mgmt_action:
            _matching(command.get("schema"), data, f"{mgmt_action} mgmt_data", None)
    outcome = precheck.policies.evaluator.manage(
        policy, mgmt_action, data, parameters=entry["parameters"])
    if not outcome.ok:
        error = outcome.error or {}
        raise PolicyError(f"{error.get('type')}: {error.get('message')}")
    return outcome.result
