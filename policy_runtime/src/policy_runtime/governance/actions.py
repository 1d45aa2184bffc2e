"""The actions a cluster's pre-check policies govern, and what configures them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from policy_runtime.clusters.operators import OperatorError

ACTIONS = (
    "add_node", "remove_node", "update_cluster", "scale_block", "add_block", "remove_block",
    "add_vdag_controller", "remove_vdag_controller", "block_mgmt", "cluster_mgmt", "add_cluster",
)
# Names upstream's code uses for the same actions.
ALIASES = {"create_cluster": "add_cluster"}
ENFORCEMENT_MODES = ("enforce", "warn", "dryrun")

# The fields of a cluster's ``config`` that decide what governance covers and how, each
# with the governance route that changes it. No generic update may change them.
GOVERNANCE_FIELDS = {
    "actionsPolicyMap": "POST /pre-check-policies/update",
    "actionsEnforcement": "POST /pre-check-policies/enforcement",
    "stabilityChecker": 'POST /mgmt {"service": "stability_checker", ...}',
    "policyExecutionMode": "POST /pre-check-policies/execution",
    "policyExecutorId": "POST /pre-check-policies/execution",
}


# What a stability checker decides on, named beside the governed actions.
STABILITY_CHECK = "stability_check"
# The two kinds of policy the service runs, and the key of the result it decides on: a
# pre-check's result without a boolean ``allowed`` denies (fail closed); a stability
# checker's without a boolean ``is_stable`` counts as not stable.
PRECHECK = "precheck"
STABILITY_CHECKER = "stability_checker"
RESULT_KEYS = {PRECHECK: "allowed", STABILITY_CHECKER: "is_stable"}


class UnknownAction(ValueError):
    """An action name that is not governed."""


class GovernanceField(OperatorError):
    """An update outside the governance routes would change a governance setting."""


def canonical(action: str) -> str:
    """The action's name, resolving upstream aliases; UnknownAction listing the valid ones."""
    name = ALIASES.get(action, action)
    if name not in ACTIONS:
        valid = ", ".join(ACTIONS + tuple(ALIASES))
        raise UnknownAction(f"unknown action {action!r}; valid actions: {valid}")
    return name


def names_of(action: str) -> tuple[str, ...]:
    """The keys a map may hold an action's entry under: its name, then upstream's aliases."""
    return (action, *(alias for alias, name in ALIASES.items() if name == action))


def _governance_of(document: Any) -> dict[str, Any]:
    config = document.get("config") if isinstance(document, dict) else None
    config = config if isinstance(config, dict) else {}
    return {field: config.get(field) for field in GOVERNANCE_FIELDS}


def refuse_governance_changes(
    before: dict, after: dict, route: str, normalise: Callable[[dict], dict] | None = None
) -> None:
    """GovernanceField naming each governance setting ``after`` changes, and its route.

    ``normalise`` (the model's defaults) is applied to ``before`` only when it differs
    as stored, e.g. a document stored before a setting had a default.
    """
    old, new = _governance_of(before), _governance_of(after)
    if old != new and normalise is not None:
        old = _governance_of(normalise(before))
    changed = [field for field in GOVERNANCE_FIELDS if old[field] != new[field]]
    if changed:
        how = "; ".join(f"config.{field}: {GOVERNANCE_FIELDS[field]}" for field in changed)
        raise GovernanceField(
            f"{route} cannot change governance settings ({', '.join(changed)}); "
            f"they change only through the governance routes: {how}"
        )


def governance_paths(paths: Any) -> list[str]:
    """The dotted paths among ``paths`` that reach into a governance setting."""
    touched = []
    for path in paths:
        parts = str(path).split(".")
        if parts[0] == "config" and len(parts) > 1 and parts[1] in GOVERNANCE_FIELDS:
            touched.append(str(path))
    return touched


def kind_of(action: str | None) -> str | None:
    """How the service runs a policy that decides ``action``: a governed action (or an
    upstream alias) as a pre-check, ``stability_check`` as a stability checker."""
    if action == STABILITY_CHECK:
        return STABILITY_CHECKER
    return PRECHECK if ALIASES.get(str(action), action) in ACTIONS else None


def answers(kind: str, result: Any) -> bool:
    """Whether ``result`` is what the service decides on for a policy of this kind."""
    return isinstance(result, dict) and isinstance(result.get(RESULT_KEYS[kind]), bool)


def declared_action(document: dict) -> str | None:
    """The action a policy document says it decides: its metadata's ``action``, else the
    one governed action (or upstream alias) among its tags."""
    metadata = document.get("metadata") if isinstance(document.get("metadata"), dict) else {}
    declared = metadata.get("action")
    if isinstance(declared, str) and declared:
        return declared
    tags = document.get("tags") or []
    if isinstance(tags, str):
        tags = tags.split(",")
    if not isinstance(tags, list):
        return None
    found = {ALIASES.get(str(tag).strip(), str(tag).strip()) for tag in tags} & set(ACTIONS)
    return found.pop() if len(found) == 1 else None
