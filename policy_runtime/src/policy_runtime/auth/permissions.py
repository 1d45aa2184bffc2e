"""Roles and permissions: the one table that says who may do what.

Every route declares one permission (``requires`` in api/routes); a request passes when
its token's role holds that permission. A ``cluster-owner`` token is further limited to
its clusters (routes check the cluster id they act on, wherever it is given: path, query
or body) and may publish policies only under its granted name prefixes.
"""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    TOKENS_MANAGE = "tokens:manage"
    POLICIES_READ = "policies:read"
    POLICIES_PUBLISH = "policies:publish"
    POLICIES_DELETE = "policies:delete"
    POLICIES_EVAL = "policies:eval"
    EXECUTORS_READ = "executors:read"
    EXECUTORS_MANAGE = "executors:manage"
    CLUSTERS_READ = "clusters:read"
    CLUSTERS_WRITE = "clusters:write"
    DECISIONS_READ = "decisions:read"
    MGMT_WRITE = "mgmt:write"
    METRICS_READ = "metrics:read"
    DOCS_READ = "docs:read"


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    CLUSTER_OWNER = "cluster-owner"
    EXECUTOR = "executor"
    READER = "reader"


P = Permission

# Permissions that only ever read: the reader role holds exactly these.
READ_PERMISSIONS = frozenset({
    P.POLICIES_READ, P.EXECUTORS_READ, P.CLUSTERS_READ, P.DECISIONS_READ, P.METRICS_READ,
    P.DOCS_READ,
})

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset(Permission) - {P.TOKENS_MANAGE},
    Role.CLUSTER_OWNER: frozenset({
        P.POLICIES_READ, P.POLICIES_PUBLISH, P.CLUSTERS_READ, P.CLUSTERS_WRITE,
        P.DECISIONS_READ, P.MGMT_WRITE, P.DOCS_READ,
    }),
    Role.EXECUTOR: frozenset({P.POLICIES_EVAL}),
    Role.READER: READ_PERMISSIONS,
}

# Permissions that a cluster-owner holds only for the clusters of its scope.
CLUSTER_SCOPED = frozenset({P.CLUSTERS_READ, P.CLUSTERS_WRITE, P.DECISIONS_READ, P.MGMT_WRITE})

# Only these roles take a scope: clusters (required) and policy name prefixes (optional).
SCOPED_ROLES = frozenset({Role.CLUSTER_OWNER})

# Permissions whose requests change stored state: recorded in the audit log.
WRITE_PERMISSIONS = frozenset({
    P.TOKENS_MANAGE, P.POLICIES_PUBLISH, P.POLICIES_DELETE, P.EXECUTORS_MANAGE,
    P.CLUSTERS_WRITE, P.MGMT_WRITE,
})


def permission_table() -> dict[str, list[str]]:
    """Role -> sorted permission names (the docs and ``token roles`` print this)."""
    return {role.value: sorted(p.value for p in perms) for role, perms in ROLE_PERMISSIONS.items()}
