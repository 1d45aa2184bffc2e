"""``POST /mgmt``: management commands of a controller's services (the stability checker)."""

from __future__ import annotations

from typing import Any

from policy_runtime.errors import PolicyError
from policy_runtime.governance.precheck import UnknownPolicy
from policy_runtime.governance.stability import StabilityChecker

SERVICES = ("stability_checker",)
BUILT_IN = ("set_policy", "set_interval", "pause", "resume", "run_now")


class BadCommand(ValueError):
    """A management command that cannot be carried out as given."""


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
            if not self.checker.precheck.is_published(cluster_id, uri):
                raise UnknownPolicy(f"no policy is published as {uri!r}")
            changes = {"policyRuleURI": uri, "parameters": data.get("parameters") or {}}
        elif action == "set_interval":
            seconds = data.get("interval_seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
                raise BadCommand('set_interval needs mgmt_data {"interval_seconds": <positive>}')
            changes = {"interval": seconds}
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
        outcome = precheck.policies.evaluator.manage(
            policy, action, data, parameters=checker.get("parameters") or {}
        )
        if not outcome.ok:
            error = outcome.error or {}
            raise PolicyError(f"{error.get('type')}: {error.get('message')}")
        return {"result": outcome.result}
