"""The actions a cluster's pre-check policies govern (seeds/001)."""

from __future__ import annotations

ACTIONS = (
    "add_node", "remove_node", "update_cluster", "scale_block", "add_block", "remove_block",
    "add_vdag_controller", "remove_vdag_controller", "block_mgmt", "cluster_mgmt", "add_cluster",
)
# Names upstream's code uses for the same actions.
ALIASES = {"create_cluster": "add_cluster"}
ENFORCEMENT_MODES = ("enforce", "warn", "dryrun")


class UnknownAction(ValueError):
    """An action name that is not governed."""


def canonical(action: str) -> str:
    """The action's name, resolving upstream aliases; UnknownAction listing the valid ones."""
    name = ALIASES.get(action, action)
    if name not in ACTIONS:
        valid = ", ".join(ACTIONS + tuple(ALIASES))
        raise UnknownAction(f"unknown action {action!r}; valid actions: {valid}")
    return name
