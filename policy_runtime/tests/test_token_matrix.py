"""Scoped tokens: every role x every route the app serves x own / foreign cluster.

The routes are enumerated from the app itself (as in test_api); each must be listed in
ROUTES below with the permission the issue gives it and a request that succeeds when the
caller may make it. A new route without an entry here, or one whose declared permission
differs (none declared included), fails ``test_every_route_declares_its_permission``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from conftest import EXAMPLES_DIR, RuntimeServer, seed_cluster
from policy_sources import ALLOW_ALL
from test_api import _served

from policy_runtime.api.app import create_app
from policy_runtime.api.guard import route_permission
from policy_runtime.api.routes.functions import REFUSED_ROUTES
from policy_runtime.api.routes.system import PUBLIC_PATHS
from policy_runtime.auth.permissions import ROLE_PERMISSIONS, Permission, Role
from policy_runtime.config import Settings

P = Permission
NEW_NODE = {
    "id": "node-3",
    "gpus": {"count": 4, "memory": 327680,
             "gpus": [{"modelName": "NVIDIA H100", "memory": 81920}] * 4,
             "features": ["fp8"], "modelNames": ["NVIDIA H100"]},
    "vcpus": {"count": 64}, "memory": 524288, "swap": 0,
    "storage": {"disks": 4, "size": 4194304},
    "network": {"interfaces": 2, "txBandwidth": 25000, "rxBandwidth": 25000},
}


@dataclass
class Ctx:
    """What the cases share: the admin client, the clusters, policies and tokens."""

    admin: httpx.Client
    server: RuntimeServer
    uid: str
    own: str
    foreign: str
    prefix: str
    uri: str = ""
    stability_uri: str = ""
    executor_id: str = ""
    tokens: dict[str, str] = field(default_factory=dict)

    def fresh(self, stem: str) -> str:
        return f"{stem}-{self.uid}-{secrets.token_hex(3)}"

    def ensure_cluster(self, cid: str) -> None:
        if self.admin.get(f"/clusters/{cid}").status_code == 404:
            created = self.admin.post("/clusters", json=seed_cluster(cid))
            assert created.status_code == 201, created.text

    def drop_cluster(self, cid: str) -> None:
        self.admin.delete(f"/clusters/{cid}")

    def publish(self, name: str) -> str:
        body = {"name": name, "version": "v0.0.1", "release_tag": "stable", "code": ALLOW_ALL}
        response = self.admin.post("/policies", json=body)
        assert response.status_code in (200, 201), response.text
        return response.json()["policy_rule_uri"]


# A request: (path, query parameters, JSON body). The builder gets the context, the target
# cluster and what the case's setup returned.
Req = tuple[str, dict[str, Any] | None, Any]


@dataclass(frozen=True)
class Case:
    permission: Permission
    # "cluster": a cluster-owner gets 403 on the foreign cluster; "filter": it gets 2xx
    # without the foreign cluster's data; "prefix": scoped by policy name prefix; "": none.
    scope: str
    request: Callable[[Ctx, str, dict], Req]
    setup: Callable[[Ctx, str], dict] | None = None
    ok: int = 200


def _none(ctx: Ctx, cid: str) -> dict:
    return {}


def _policy_name(ctx: Ctx, cid: str) -> dict:
    # The own side publishes under the owner's prefix; the foreign side outside it.
    stem = ctx.prefix if cid == ctx.own else f"aiosv1.policies.other-{ctx.uid}."
    return {"name": f"{stem}p{secrets.token_hex(4)}"}


def _fresh_policy(ctx: Ctx, cid: str) -> dict:
    return {"uri": ctx.publish(f"aiosv1.policies.del-{ctx.uid}-{secrets.token_hex(4)}")}


def _published_policy(ctx: Ctx, cid: str) -> dict:
    # A policy under the owner's prefix (own side) or outside it (foreign side).
    name = _policy_name(ctx, cid)["name"]
    return {"name": name, "uri": ctx.publish(name)}


def _absent(ctx: Ctx, cid: str) -> dict:
    ctx.drop_cluster(cid)
    return {}


def _fresh_executor(ctx: Ctx, cid: str) -> dict:
    executor_id = ctx.fresh("ex")
    response = ctx.admin.post("/executors", json={"id": executor_id, "url": "http://127.0.0.1:9"})
    assert response.status_code == 201, response.text
    return {"id": executor_id}


def _fresh_token(ctx: Ctx, cid: str) -> dict:
    name = ctx.fresh("tok")
    assert ctx.admin.post("/tokens", json={"name": name, "role": "reader"}).status_code == 201
    return {"name": name}


def _with_node(ctx: Ctx, cid: str) -> dict:
    ctx.admin.post("/cluster-actions/add-node", params={"cluster_id": cid}, json=NEW_NODE)
    return {}


def _without_node(ctx: Ctx, cid: str) -> dict:
    ctx.admin.delete("/cluster-actions/remove-node/node-3", params={"cluster_id": cid})
    return {}


def _checked(ctx: Ctx, cid: str) -> dict:
    params = {"cluster_id": cid}
    nodes = json.loads((EXAMPLES_DIR / "cluster-stability/cases/stable.json").read_text())
    assert ctx.admin.post("/mgmt", params=params, json=_set_policy(ctx)).status_code == 200
    ctx.admin.put("/nodes-data", params=params, json=nodes["input_data"]["nodes_data"])
    run = {"service": "stability_checker", "mgmt_action": "run_now"}
    assert ctx.admin.post("/mgmt", params=params, json=run).status_code == 200
    return {}


def _set_policy(ctx: Ctx) -> dict:
    return {"service": "stability_checker", "mgmt_action": "set_policy",
            "mgmt_data": {"policy_rule_uri": ctx.stability_uri}}


def _policy_body(ctx: Ctx, cid: str, x: dict) -> dict:
    return {"name": x["name"], "version": "v0.0.1", "release_tag": "stable", "code": ALLOW_ALL}


def _q(cid: str) -> dict:
    return {"cluster_id": cid}


def _graph_body(ctx: Ctx, cid: str, x: dict) -> dict:
    return {"graph_name": x["name"], "graph_version": "v0.0.1", "graph_release_tag": "stable",
            "graph_function_ids": [ctx.uri], "graph_connection_data": {}}


def _stored_graph(ctx: Ctx, cid: str) -> dict:
    # Named under the owner's prefix (own side) or outside it (foreign side).
    x = _policy_name(ctx, cid)
    response = ctx.admin.post("/graphs", json=_graph_body(ctx, cid, x))
    assert response.status_code == 200, response.text
    return {**x, "graph_uri": response.json()["data"]["graph_uri"]}


def _refused_route(permission: Permission, path: str, method: str) -> Case:
    """An upstream route this runtime answers with 501 (api/routes/functions.py)."""
    url = "x".join(part.split("}")[-1] for part in path.split("{"))  # {param} -> x
    return Case(permission, "", lambda c, cid, x: (url, None, {}), ok=501)


DOCS = Case(P.DOCS_READ, "", lambda c, cid, x: ("", None, None))
ROUTES: dict[tuple[str, str], Case] = {
    ("GET", "/openapi.json"): DOCS,
    ("GET", "/docs"): DOCS,
    ("GET", "/docs/oauth2-redirect"): DOCS,
    ("GET", "/redoc"): DOCS,
    ("GET", "/metrics"): Case(P.METRICS_READ, "", lambda c, cid, x: ("/metrics", None, None)),
    # policy authoring: what each action hands its policy, the OpenAPI document's schemas
    ("GET", "/action-inputs"): Case(
        P.DOCS_READ, "", lambda c, cid, x: ("/action-inputs", None, None)),
    ("GET", "/action-inputs/{action}"): Case(
        P.DOCS_READ, "", lambda c, cid, x: ("/action-inputs/add_node", None, None)),
    # policies
    ("POST", "/policies/{uri}/eval"): Case(
        P.POLICIES_EVAL, "", lambda c, cid, x: (f"/policies/{c.uri}/eval", None,
                                                {"input_data": {"cluster": cid}})),
    ("POST", "/policies"): Case(
        P.POLICIES_PUBLISH, "prefix", lambda c, cid, x: ("/policies", None,
                                                         _policy_body(c, cid, x)),
        _policy_name, ok=201),
    ("GET", "/policies"): Case(P.POLICIES_READ, "", lambda c, cid, x: ("/policies", None, None)),
    ("GET", "/policies/{uri}"): Case(
        P.POLICIES_READ, "", lambda c, cid, x: (f"/policies/{c.uri}", None, None)),
    ("DELETE", "/policies/{uri}"): Case(
        P.POLICIES_DELETE, "", lambda c, cid, x: (f"/policies/{x['uri']}", None, None),
        _fresh_policy, ok=204),
    ("POST", "/policy"): Case(
        P.POLICIES_PUBLISH, "prefix", lambda c, cid, x: ("/policy", None, _policy_body(c, cid, x)),
        _policy_name),
    # upstream PolicyDBClient.update_policy / query_policies (test_upstream_policy_contract.py)
    ("PUT", "/policy/{uri}"): Case(
        P.POLICIES_PUBLISH, "prefix",
        lambda c, cid, x: (f"/policy/{x['uri']}", None,
                           {**_policy_body(c, cid, x), "description": "updated"}),
        _published_policy),
    ("POST", "/policy/query"): Case(
        P.POLICIES_READ, "", lambda c, cid, x: ("/policy/query", None, {"name": "x"})),
    ("GET", "/policy/{uri}"): Case(
        P.POLICIES_READ, "", lambda c, cid, x: (f"/policy/{c.uri}", None, None)),
    ("DELETE", "/policy/{uri}"): Case(
        P.POLICIES_DELETE, "", lambda c, cid, x: (f"/policy/{x['uri']}", None, None),
        _fresh_policy),
    ("POST", "/execute_policy"): Case(
        P.POLICIES_EVAL, "", lambda c, cid, x: ("/execute_policy", None,
                                                {"policy_rule_uri": c.uri, "input_data": {}})),
    # executors
    ("POST", "/executors"): Case(
        P.EXECUTORS_MANAGE, "", lambda c, cid, x: (
            "/executors", None, {"id": c.fresh("ex"), "url": "http://127.0.0.1:9"}), ok=201),
    ("GET", "/executors"): Case(
        P.EXECUTORS_READ, "", lambda c, cid, x: ("/executors", None, None)),
    ("GET", "/executors/{executor_id}"): Case(
        P.EXECUTORS_READ, "", lambda c, cid, x: (f"/executors/{x['id']}", None, None),
        _fresh_executor),
    ("DELETE", "/executors/{executor_id}"): Case(
        P.EXECUTORS_MANAGE, "", lambda c, cid, x: (f"/executors/{x['id']}", None, None),
        _fresh_executor, ok=204),
    ("POST", "/executor/{executor_id}/execute_policy"): Case(
        P.POLICIES_EVAL, "", lambda c, cid, x: (
            f"/executor/{c.executor_id}/execute_policy", None,
            {"policy_rule_uri": c.uri, "input_data": {}})),
    # clusters
    ("POST", "/clusters/query"): Case(
        P.CLUSTERS_READ, "filter", lambda c, cid, x: ("/clusters/query", None, {"id": cid})),
    ("GET", "/clusters"): Case(
        P.CLUSTERS_READ, "filter", lambda c, cid, x: ("/clusters", {"limit": 500}, None)),
    ("POST", "/clusters"): Case(
        P.CLUSTERS_WRITE, "cluster", lambda c, cid, x: ("/clusters", None, seed_cluster(cid)),
        _absent, ok=201),
    ("POST", "/api/createCluster"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: ("/api/createCluster", None, seed_cluster(cid)), _absent),
    ("POST", "/api/addNode"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: ("/api/addNode", None, {
            "header": {"templateUri": "Parser/V1", "parameters": {}},
            "body": {"spec": {"values": {**NEW_NODE, "clusterId": cid}}}}), _without_node),
    ("GET", "/clusters/{cluster_id}"): Case(
        P.CLUSTERS_READ, "cluster", lambda c, cid, x: (f"/clusters/{cid}", None, None)),
    ("PUT", "/clusters/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/clusters/{cid}", None, {"$set": {"reputation": 90}})),
    ("DELETE", "/clusters/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster", lambda c, cid, x: (f"/clusters/{cid}", None, None)),
    # controller (governance)
    ("GET", "/pre-check-policies"): Case(
        P.CLUSTERS_READ, "cluster", lambda c, cid, x: ("/pre-check-policies", _q(cid), None)),
    ("GET", "/pre-check-policies/get"): Case(
        P.CLUSTERS_READ, "cluster",
        lambda c, cid, x: ("/pre-check-policies/get", _q(cid), None)),
    ("POST", "/pre-check-policies/update"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: ("/pre-check-policies/update", _q(cid), {"add_cluster": ""})),
    ("POST", "/pre-check-policies/enforcement"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: ("/pre-check-policies/enforcement", _q(cid), {"add_node": ""})),
    ("POST", "/pre-check-policies/execution"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: ("/pre-check-policies/execution", _q(cid),
                           {"policyExecutionMode": "local"})),
    ("POST", "/pre-check/{action}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: ("/pre-check/add_node", _q(cid), {"node": {}})),
    ("PUT", "/clusters/update/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/clusters/update/{cid}", None, {"tags": ["put"]})),
    ("PATCH", "/clusters/update/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/clusters/update/{cid}", None, {"tags": ["patch"]})),
    ("GET", "/decisions"): Case(
        P.DECISIONS_READ, "cluster", lambda c, cid, x: ("/decisions", _q(cid), None)),
    ("POST", "/cluster-actions/add-node"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: ("/cluster-actions/add-node", _q(cid), NEW_NODE), _without_node),
    ("DELETE", "/cluster-actions/remove-node/{node_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: ("/cluster-actions/remove-node/node-3", _q(cid), None), _with_node),
    ("POST", "/clusters/create"): Case(
        P.CLUSTERS_WRITE, "cluster", lambda c, cid, x: ("/clusters/create", None,
                                                        seed_cluster(cid)), _absent),
    ("GET", "/clusters/read/{cluster_id}"): Case(
        P.CLUSTERS_READ, "cluster", lambda c, cid, x: (f"/clusters/read/{cid}", None, None)),
    ("DELETE", "/clusters/delete/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster", lambda c, cid, x: (f"/clusters/delete/{cid}", None, None)),
    # upstream gateway node routes (test_upstream_cluster_contract.py)
    ("POST", "/pre-checks/add-node/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/pre-checks/add-node/{cid}", None, NEW_NODE)),
    ("POST", "/pre-check-policies/add_node/dry_run/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/pre-check-policies/add_node/dry_run/{cid}", None, NEW_NODE)),
    ("POST", "/pre-checks/remove-node/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/pre-checks/remove-node/{cid}", None, {"node_id": "node-1"})),
    ("POST", "/pre-check-policies/remove_node/dry_run/{cluster_id}/{node_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/pre-check-policies/remove_node/dry_run/{cid}/node-1", None, None)),
    ("POST", "/join-node/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/join-node/{cid}", None, {"node_data": NEW_NODE}), _without_node),
    ("POST", "/remove-node/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/remove-node/{cid}", None, {"node_id": "node-3"}), _with_node),
    ("POST", "/pre-checks/add-node/mgmt/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/pre-checks/add-node/mgmt/{cid}", None,
                           {"mgmt_action": "get", "mgmt_data": {}}), ok=400),
    ("POST", "/pre-checks/remove-node/mgmt/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/pre-checks/remove-node/mgmt/{cid}", None,
                           {"mgmt_action": "get", "mgmt_data": {}}), ok=400),
    ("POST", "/nodes/add-node-to-cluster/{cluster_id}"): Case(
        P.CLUSTERS_WRITE, "cluster",
        lambda c, cid, x: (f"/nodes/add-node-to-cluster/{cid}", None, NEW_NODE), _without_node),
    ("PUT", "/nodes-data"): Case(
        P.CLUSTERS_WRITE, "cluster", lambda c, cid, x: ("/nodes-data", _q(cid), [])),
    ("GET", "/check_stability"): Case(
        P.CLUSTERS_READ, "cluster", lambda c, cid, x: ("/check_stability", _q(cid), None),
        _checked),
    ("POST", "/mgmt"): Case(
        P.MGMT_WRITE, "cluster", lambda c, cid, x: ("/mgmt", _q(cid), _set_policy(c))),
    # upstream graphs and functions (test_upstream_graph_contract.py)
    ("POST", "/graphs"): Case(
        P.POLICIES_PUBLISH, "prefix", lambda c, cid, x: ("/graphs", None, _graph_body(c, cid, x)),
        _policy_name),
    ("GET", "/graphs/{graph_uri}"): Case(
        P.POLICIES_READ, "", lambda c, cid, x: (f"/graphs/{x['graph_uri']}", None, None),
        _stored_graph),
    ("PUT", "/graphs/{graph_uri}"): Case(
        P.POLICIES_PUBLISH, "prefix",
        lambda c, cid, x: (f"/graphs/{x['graph_uri']}", None,
                           {**_graph_body(c, cid, x), "graph_description": "updated"}),
        _stored_graph),
    ("DELETE", "/graphs/{graph_uri}"): Case(
        P.POLICIES_DELETE, "", lambda c, cid, x: (f"/graphs/{x['graph_uri']}", None, None),
        _stored_graph),
    ("POST", "/graphs/query"): Case(
        P.POLICIES_READ, "", lambda c, cid, x: ("/graphs/query", None, {"graph_name": "x"})),
    ("POST", "/graph/execute_graph"): Case(
        P.POLICIES_EVAL, "", lambda c, cid, x: ("/graph/execute_graph", None,
                                                {"graph_uri": x["graph_uri"], "input_data": {}}),
        _stored_graph),
    ("GET", "/function/{function_id}"): Case(
        P.POLICIES_READ, "", lambda c, cid, x: ("/function/fn", None, None), ok=404),
    ("POST", "/function/query"): Case(
        P.POLICIES_READ, "", lambda c, cid, x: ("/function/query", None, {"function_id": "x"})),
    **{(method, path): _refused_route(permission, path, method)
       for method, path, permission, *_ in REFUSED_ROUTES},
    # tokens (admin)
    ("POST", "/tokens"): Case(
        P.TOKENS_MANAGE, "", lambda c, cid, x: ("/tokens", None,
                                                {"name": c.fresh("new"), "role": "reader"}),
        ok=201),
    ("GET", "/tokens"): Case(P.TOKENS_MANAGE, "", lambda c, cid, x: ("/tokens", None, None)),
    ("GET", "/tokens/roles"): Case(
        P.TOKENS_MANAGE, "", lambda c, cid, x: ("/tokens/roles", None, None)),
    ("GET", "/tokens/{name}"): Case(
        P.TOKENS_MANAGE, "", lambda c, cid, x: (f"/tokens/{c.tokens['reader-name']}", None,
                                                None)),
    ("DELETE", "/tokens/{name}"): Case(
        P.TOKENS_MANAGE, "", lambda c, cid, x: (f"/tokens/{x['name']}", None, None),
        _fresh_token),
    ("GET", "/audit"): Case(P.TOKENS_MANAGE, "", lambda c, cid, x: ("/audit", None, None)),
}
# The docs pages are FastAPI's own routes: their path is the request.
for (_method, _path), _case in list(ROUTES.items()):
    if _case is DOCS:
        ROUTES[(_method, _path)] = Case(P.DOCS_READ, "", lambda c, cid, x, p=_path: (p, None, None))


def served_routes() -> list[tuple[str, str, Any]]:
    app = create_app(Settings(insecure_no_auth=True, run_modes="policies,clusters,controller"))
    return [
        (method, route.path, route)
        for route in _served(app.routes) if route.path not in PUBLIC_PATHS
        for method in sorted(route.methods - {"HEAD"})
    ]


SERVED = served_routes()
ROLES = [role.value for role in Role]


def test_every_route_declares_its_permission() -> None:
    served = {(method, path) for method, path, _ in SERVED}
    assert served - set(ROUTES) == set(), "routes the matrix does not know: add them to ROUTES"
    assert set(ROUTES) - served == set(), "ROUTES lists routes the app no longer serves"
    docs = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
    for method, path, route in SERVED:
        if path in docs:
            continue  # FastAPI's own pages: the middleware requires docs:read
        assert route_permission(route) == ROUTES[(method, path)].permission, (method, path)


def test_an_app_with_an_undeclared_route_is_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi import APIRouter

    from policy_runtime.api import app as app_module

    undeclared = APIRouter()

    @undeclared.get("/undeclared")
    async def endpoint() -> dict:
        return {}

    routers = dict(app_module.ROUTERS_BY_MODE)
    routers[app_module.RunMode.POLICIES] += (undeclared,)
    monkeypatch.setattr(app_module, "ROUTERS_BY_MODE", routers)
    with pytest.raises(RuntimeError, match="/undeclared declares no permission"):
        create_app(Settings(insecure_no_auth=True, run_modes="policies"))


def test_the_role_table_matches_the_issue() -> None:
    by_role = {role: {(m, p) for (m, p), case in ROUTES.items()
                      if case.permission in ROLE_PERMISSIONS[Role(role)]} for role in ROLES}
    assert by_role["admin"] == set(ROUTES)
    assert by_role["operator"] == {k for k, c in ROUTES.items() if c.permission != P.TOKENS_MANAGE}
    assert {p for _, p in by_role["executor"]} == {
        "/policies/{uri}/eval", "/execute_policy", "/executor/{executor_id}/execute_policy",
        "/graph/execute_graph", "/function/call_function/{name}"}
    # reader: GET only (but upstream's two GETs that deploy and remove graphs), and the
    # POSTs that only read (a query's filter body, an estimate).
    writing_gets = {("GET", "/graph/deploy-adhoc-graph/{executor_id}"),
                    ("GET", "/graph/remove/{executor_id}")}
    assert by_role["reader"] == {k for k in ROUTES if k[0] == "GET" and
                                 ROUTES[k].permission != P.TOKENS_MANAGE} - writing_gets | {
        ("POST", "/clusters/query"), ("POST", "/policy/query"), ("POST", "/graphs/query"),
        ("POST", "/function/query"), ("POST", "/jobs/query"),
        ("POST", "/executor/{executor_id}/estimator/estimate")}
    owner = by_role["cluster-owner"]
    # what a policy gets is public schema information: whoever may read policies reads it
    authoring = {("GET", "/action-inputs"), ("GET", "/action-inputs/{action}")}
    assert authoring <= owner & by_role["reader"] & by_role["operator"]
    assert not any(p.startswith(("/executor", "/tokens", "/audit", "/metrics")) for _, p in owner)
    assert ("DELETE", "/policies/{uri}") not in owner and ("POST", "/policies") in owner
    assert ("POST", "/policies/{uri}/eval") not in owner


@pytest.fixture(scope="module")
def ctx(server: RuntimeServer) -> Iterator[Ctx]:
    uid = secrets.token_hex(3)
    with server.client() as admin:
        context = Ctx(admin, server, uid, own=f"own-{uid}", foreign=f"foreign-{uid}",
                      prefix=f"aiosv1.policies.owner-{uid}.")
        for cid in (context.own, context.foreign):
            context.ensure_cluster(cid)
        context.uri = context.publish(f"aiosv1.policies.matrix-{uid}")
        directory = EXAMPLES_DIR / "cluster-stability"
        document = json.loads((directory / "policy.json").read_text())
        document["code"] = (directory / "policy.py").read_text()
        context.stability_uri = admin.post("/policies", json=document).json()["policy_rule_uri"]
        context.executor_id = f"self-{uid}"
        registered = admin.post("/executors", json={"id": context.executor_id, "url": server.url})
        assert registered.status_code == 201, registered.text
        for role in ROLES:
            body: dict[str, Any] = {"name": f"matrix-{role}-{uid}", "role": role}
            if role == "cluster-owner":
                body.update(clusters=[context.own], policy_prefixes=[context.prefix])
            created = admin.post("/tokens", json=body)
            assert created.status_code == 201, created.text
            context.tokens[role] = created.json()["token"]
        context.tokens["reader-name"] = f"matrix-reader-{uid}"
        yield context


def _ids(body: Any) -> set[str]:
    items = body.get("items", []) if isinstance(body, dict) else body
    return {item.get("id") for item in items}


@pytest.mark.parametrize("side", ["own", "foreign"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize(("method", "path"), sorted(ROUTES))
def test_matrix(ctx: Ctx, method: str, path: str, role: str, side: str) -> None:
    case = ROUTES[(method, path)]
    cid = ctx.own if side == "own" else ctx.foreign
    extra = (case.setup or _none)(ctx, cid)
    url, params, body = case.request(ctx, cid, extra)
    headers = {"Authorization": f"Bearer {ctx.tokens[role]}"}
    try:
        response = httpx.request(method, ctx.server.url + url, params=params, json=body,
                                 headers=headers, timeout=30)
    finally:
        ctx.ensure_cluster(cid)
    allowed = case.permission in ROLE_PERMISSIONS[Role(role)]
    out_of_scope = role == "cluster-owner" and side == "foreign" and case.scope in (
        "cluster", "prefix")
    if allowed and not out_of_scope:
        assert response.status_code == case.ok, response.text
        if role == "cluster-owner" and case.scope == "filter":
            assert ctx.foreign not in _ids(response.json())
            assert (ctx.own in _ids(response.json())) == (side == "own" or path == "/clusters")
        return
    assert response.status_code == 403, response.text
    detail = response.json()["detail"]
    assert case.permission.value in detail and response.json()["permission"] == case.permission
    owner_scope = ctx.own in detail or ctx.prefix in detail
    assert "scope" in detail and owner_scope == (role == "cluster-owner")
    if allowed:  # the role has the permission, but not on this cluster or policy name
        assert "outside the scope" in detail
        assert (cid if case.scope == "cluster" else "policy name prefixes") in detail
        assert ctx.own in detail or ctx.prefix in detail
