"""Who is calling: the token's name, role and scope, and the checks made against it."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from policy_runtime.auth.permissions import (
    CLUSTER_SCOPED,
    ROLE_PERMISSIONS,
    Permission,
    Role,
)

# The ASGI scope key the auth middleware stores the caller under.
SCOPE_KEY = "aios.principal"

# The caller of the request being served, for records written below the API (the decision
# log); copied into the threads that run_in_threadpool starts.
current_token_name: ContextVar[str] = ContextVar("current_token_name", default="")


class Forbidden(Exception):
    """The token is valid but may not do this: the message names permission and scope."""

    def __init__(self, message: str, permission: str) -> None:
        super().__init__(message)
        self.permission = permission


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    # None: every cluster; otherwise the cluster ids this token may touch.
    clusters: frozenset[str] | None = None
    policy_prefixes: tuple[str, ...] = ()
    permissions: frozenset[Permission] = field(default=frozenset())

    @classmethod
    def of(
        cls, name: str, role: Role | str, clusters: list[str] | None = None,
        policy_prefixes: list[str] | None = None,
    ) -> Principal:
        role = Role(role)
        return cls(
            name=name, role=role,
            clusters=frozenset(clusters or ()) if role == Role.CLUSTER_OWNER else None,
            policy_prefixes=tuple(policy_prefixes or ()),
            permissions=ROLE_PERMISSIONS[role],
        )

    def scope_text(self) -> str:
        if self.clusters is None:
            return "all clusters"
        return "clusters " + (", ".join(sorted(self.clusters)) or "(none)")

    def lacks(self, permission: Permission) -> Forbidden:
        return Forbidden(
            f"forbidden: token {self.name!r} (role {self.role.value}, scope: "
            f"{self.scope_text()}) lacks permission {permission.value}", permission.value,
        )

    def require(self, permission: Permission) -> None:
        if permission not in self.permissions:
            raise self.lacks(permission)

    def may_touch(self, cluster_id: str) -> bool:
        return self.clusters is None or cluster_id in self.clusters

    def require_cluster(self, permission: Permission, cluster_id: object) -> None:
        self.require(permission)
        if permission in CLUSTER_SCOPED and not (
            isinstance(cluster_id, str) and self.may_touch(cluster_id)
        ):
            raise Forbidden(
                f"forbidden: permission {permission.value} on cluster {cluster_id!r} is "
                f"outside the scope of token {self.name!r} ({self.scope_text()})",
                permission.value,
            )

    def require_cluster_context(self, cluster_id: str) -> None:
        if not self.may_touch(cluster_id):
            raise Forbidden(
                f"forbidden: evaluating for cluster {cluster_id!r} (its policy context) is "
                f"outside the scope of token {self.name!r} ({self.scope_text()})",
                Permission.POLICIES_EVAL.value,
            )

    def require_policy_name(self, name: str) -> None:
        self.require(Permission.POLICIES_PUBLISH)
        if self.role != Role.CLUSTER_OWNER:
            return
        if not any(name.startswith(prefix) for prefix in self.policy_prefixes):
            granted = ", ".join(self.policy_prefixes) or "(none)"
            raise Forbidden(
                f"forbidden: permission policies:publish on policy {name!r} is outside the "
                f"scope of token {self.name!r} (policy name prefixes {granted})",
                Permission.POLICIES_PUBLISH.value,
            )


BOOTSTRAP_NAME = "bootstrap"
BOOTSTRAP = Principal.of(BOOTSTRAP_NAME, Role.ADMIN)
