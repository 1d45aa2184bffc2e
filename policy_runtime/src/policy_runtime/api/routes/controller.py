"""Run mode ``controller``: pre-check policy maps, decisions, governed cluster updates.

It also serves the routes of upstream's cluster controller gateway that cluster owners
and upstream's services call, answering as upstream does (docs/compatibility/clusters.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from policy_runtime.api.deps import precheck_service
from policy_runtime.api.guard import GuardedRoute, caller, check_cluster, requires
from policy_runtime.auth.permissions import Permission
from policy_runtime.clusters.store import InvalidCluster
from policy_runtime.governance import inputs
from policy_runtime.governance.mgmt import manage_pre_check_policy
from policy_runtime.governance.precheck import PolicyDenied, PrecheckService

router = APIRouter(tags=["controller (governance)"], route_class=GuardedRoute)
P = Permission
READ = requires(P.CLUSTERS_READ)
WRITE = requires(P.CLUSTERS_WRITE)
Precheck = Annotated[PrecheckService, Depends(precheck_service)]
ClusterId = Annotated[
    str | None, Query(max_length=128, description="default: the controller's AIOS_CLUSTER_ID")
]


@router.get(
    "/pre-check-policies", summary="The action -> policy map of a cluster", openapi_extra=READ
)
@router.get(
    "/pre-check-policies/get", summary="The action -> policy map (upstream route)",
    openapi_extra=READ,
)
async def get_policy_map(
    service: Precheck, request: Request, cluster_id: ClusterId = None
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    check_cluster(request, P.CLUSTERS_READ, cid)
    mapping = await run_in_threadpool(service.policy_map, cid)
    # success and map: what upstream's gateway answers (and its callers read).
    return {"cluster_id": cid, "actionsPolicyMap": mapping, "success": True, "map": mapping}


@router.post(
    "/pre-check-policies/update",
    summary='Set actions\' policies: a URI sets, "" removes, unnamed actions stay',
    openapi_extra=WRITE,
)
async def update_policy_map(
    service: Precheck, request: Request, body: Annotated[dict[str, Any], Body()],
    cluster_id: ClusterId = None,
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    check_cluster(request, P.CLUSTERS_WRITE, cid)
    mapping = await run_in_threadpool(service.update_map, cid, body)
    return {"cluster_id": cid, "actionsPolicyMap": mapping, "success": True, "map": mapping}


@router.post(
    "/pre-check-policies/enforcement",
    summary='Set actions\' enforcement: enforce, warn or dryrun; "" returns to enforce',
    openapi_extra=WRITE,
)
async def update_enforcement(
    service: Precheck, request: Request, body: Annotated[dict[str, Any], Body()],
    cluster_id: ClusterId = None,
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    check_cluster(request, P.CLUSTERS_WRITE, cid)
    modes = await run_in_threadpool(service.update_enforcement, cid, body)
    return {"cluster_id": cid, "actionsEnforcement": modes}


@router.post(
    "/pre-check-policies/execution",
    summary="Set where the cluster's policies run (policyExecutionMode, policyExecutorId)",
    openapi_extra=WRITE,
)
async def update_execution(
    service: Precheck, request: Request, body: Annotated[dict[str, Any], Body()],
    cluster_id: ClusterId = None,
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    check_cluster(request, P.CLUSTERS_WRITE, cid)
    return {"cluster_id": cid, **await run_in_threadpool(service.update_execution, cid, body)}


@router.post(
    "/pre-check/{action}",
    summary="Evaluate an action's pre-check policy (a dry check: logged as such, applies nothing)",
    openapi_extra={**WRITE, **inputs.pre_check_body()},
)
async def pre_check(
    action: str, service: Precheck, request: Request, body: Annotated[Any, Body()] = None,
    cluster_id: ClusterId = None,
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    check_cluster(request, P.CLUSTERS_WRITE, cid)
    decision = await run_in_threadpool(
        lambda: service.decide(cid, action, body, dry_check=True)
    )
    return decision.to_dict()


@router.patch(
    "/clusters/update/{cluster_id}", summary="Governed update (dotted-path fields)",
    openapi_extra=WRITE,
)
async def governed_update(
    cluster_id: str, service: Precheck, request: Request,
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    return await run_in_threadpool(service.update_cluster, cluster_id, body)


@router.put(
    "/clusters/update/{cluster_id}",
    summary='Governed update (upstream gateway route: {"success": true, "data": <cluster>})',
    openapi_extra=WRITE,
)
async def gateway_update(
    cluster_id: str, service: Precheck, request: Request,
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    return _ok(await run_in_threadpool(service.update_cluster, cluster_id, body))


@router.get(
    "/decisions", summary="The latest pre-check decisions",
    openapi_extra=requires(P.DECISIONS_READ),
)
async def decisions(
    service: Precheck,
    request: Request,
    cluster_id: ClusterId = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    principal = caller(request)
    scope = None
    if cluster_id:
        check_cluster(request, P.DECISIONS_READ, cluster_id)
    elif principal is not None and principal.clusters is not None:
        scope = sorted(principal.clusters)  # a cluster-owner reads its own clusters' only
    return await run_in_threadpool(
        lambda: service.log.latest(
            cluster_id=cluster_id, action=action, limit=limit, cluster_ids=scope
        )
    )


@router.post(
    "/cluster-actions/add-node", summary="Governed: add a node to a cluster",
    openapi_extra={**WRITE, **inputs.request_body(
        "Node", "the node, as onboarding reports it (its policy gets AddNodeInput)")},
)
async def add_node(
    service: Precheck, request: Request, body: Annotated[dict[str, Any], Body()],
    cluster_id: ClusterId = None,
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    check_cluster(request, P.CLUSTERS_WRITE, cid)
    return await run_in_threadpool(service.add_node, cid, body)


@router.delete(
    "/cluster-actions/remove-node/{node_id}", summary="Governed: remove a node from a cluster",
    openapi_extra=WRITE,
)
async def remove_node(
    node_id: str, service: Precheck, request: Request, cluster_id: ClusterId = None
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    check_cluster(request, P.CLUSTERS_WRITE, cid)
    return await run_in_threadpool(service.remove_node, cid, node_id)


# The upstream gateway's routes, answering as it does: 200 {"success": true, "data": ...}
# (its callers check both, then read data); missing clusters are 404s, refusals 4xx.
def _ok(data: Any) -> dict[str, Any]:
    return {"success": True, "data": data}


@router.post(
    "/clusters/create", summary='Governed: add a cluster (upstream; {"success", "data"})',
    openapi_extra=WRITE,
)
async def gateway_create(
    service: Precheck, request: Request, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, body.get("id"))
    return _ok(await run_in_threadpool(service.create_cluster, body))


@router.get(
    "/clusters/read/{cluster_id}", summary='One cluster (upstream gateway; {"success", "data"})',
    openapi_extra=READ,
)
async def gateway_read(cluster_id: str, service: Precheck, request: Request) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_READ, cluster_id)
    return _ok(await run_in_threadpool(service.clusters.get, cluster_id))


@router.delete(
    "/clusters/delete/{cluster_id}",
    summary='Remove a cluster (upstream gateway; {"success", "data", "deleted"})',
    openapi_extra=WRITE,
)
async def gateway_delete(cluster_id: str, service: Precheck, request: Request) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    await run_in_threadpool(service.clusters.delete, cluster_id)
    return {**_ok({"message": "Cluster deleted"}), "deleted": cluster_id}


# -- the upstream gateway's node routes ------------------------------------------------------
# Upstream's gateway runs the add_node / remove_node pre-check, then asks the cluster's
# membership server to check, join or remove the node. Here the registry is the record:
# the pre-checks and dry runs evaluate the policy (applying nothing), join-node and
# remove-node are the governed registry actions. A denial answers 200 with allowed: false,
# as upstream's gateway does; its callers read allowed.
def _node_of(data: Any) -> dict[str, Any]:
    """The node of an upstream request: the node document itself, or wrapped as
    ``{"node_data": ...}`` (as upstream's membership client sends it), without the
    cluster_id that upstream's gateway adds to it."""
    if isinstance(data, dict) and set(data) == {"node_data"}:
        data = data["node_data"]
    if not isinstance(data, dict):
        raise InvalidCluster("node_data must be an object (the node document)")
    return {key: value for key, value in data.items() if key != "cluster_id"}


def _node_id_of(body: dict[str, Any]) -> str:
    node_id = body.get("node_id")
    if not isinstance(node_id, str) or not node_id or len(node_id) > 253:
        raise InvalidCluster('give {"node_id": "<the node\'s id>"}')
    return node_id


def _dry(service: PrecheckService, cid: str, action: str, subject: dict[str, Any]) -> Any:
    cluster = service.clusters.get(cid)
    return service.decide(cid, action, {"cluster_id": cid, **subject, "cluster": cluster},
                          cluster, dry_check=True)


def _denied(decision: Any) -> dict[str, Any]:
    return {"success": True, "allowed": False, "message": decision.reason or "denied by policy",
            "decision_id": decision.decision_id, "policy_rule_uri": decision.policy_rule_uri}


@router.post(
    "/pre-checks/add-node/{cluster_id}",
    summary="Pre-check a node's addition (upstream gateway route; applies nothing)",
    openapi_extra=WRITE,
)
async def gateway_pre_check_add_node(
    cluster_id: str, service: Precheck, request: Request, body: Annotated[Any, Body()] = None,
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    node = _node_of(body)
    decision = await run_in_threadpool(_dry, service, cluster_id, "add_node", {"node": node})
    if not decision.allowed:
        return _denied(decision)
    rewritten = decision.input_data.get("node", node) if isinstance(
        decision.input_data, dict) else node
    return {"success": True, "allowed": True, "node_data": rewritten,
            "decision_id": decision.decision_id}


@router.post(
    "/pre-check-policies/add_node/dry_run/{cluster_id}",
    summary="Dry-run the add_node pre-check (upstream gateway route; applies nothing)",
    openapi_extra=WRITE,
)
async def gateway_dry_run_add_node(
    cluster_id: str, service: Precheck, request: Request, body: Annotated[Any, Body()] = None,
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    node = _node_of(body)
    decision = await run_in_threadpool(_dry, service, cluster_id, "add_node", {"node": node})
    return {"success": True, "allowed": decision.allowed, "data": decision.to_dict()}


@router.post(
    "/pre-checks/remove-node/{cluster_id}",
    summary="Pre-check a node's removal (upstream gateway route; applies nothing)",
    openapi_extra=WRITE,
)
async def gateway_pre_check_remove_node(
    cluster_id: str, service: Precheck, request: Request,
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    node_id = _node_id_of(body)
    decision = await run_in_threadpool(
        _dry, service, cluster_id, "remove_node", {"node_id": node_id})
    if not decision.allowed:
        return _denied(decision)
    return {"success": True, "allowed": True, "node_id": node_id,
            "decision_id": decision.decision_id}


@router.post(
    "/pre-check-policies/remove_node/dry_run/{cluster_id}/{node_id}",
    summary="Dry-run the remove_node pre-check (upstream gateway route; applies nothing)",
    openapi_extra=WRITE,
)
async def gateway_dry_run_remove_node(
    cluster_id: str, node_id: str, service: Precheck, request: Request,
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    decision = await run_in_threadpool(
        _dry, service, cluster_id, "remove_node", {"node_id": node_id})
    return {"success": True, "allowed": decision.allowed, "data": decision.to_dict()}


def _governed_or_denied(action: Callable[[], dict[str, Any]], message: str) -> dict[str, Any]:
    """Upstream's membership server answers ``{"success", "result": {"success", "message",
    "join_command"}}``; result also holds the cluster after the change."""
    try:
        cluster = action()
    except PolicyDenied as denied:
        return _denied(denied.decision)
    additional = (cluster.get("clusterMetadata") or {}).get("additionalInfo")
    join_command = additional.get("joinCommand") if isinstance(additional, dict) else None
    return {"success": True, "allowed": True, "result": {
        "success": True, "message": message,
        "join_command": join_command if isinstance(join_command, str) else "",
        "cluster": cluster}}


@router.post(
    "/join-node/{cluster_id}",
    summary="Governed: add a node to the registry (upstream gateway route)",
    openapi_extra=WRITE,
)
async def gateway_join_node(
    cluster_id: str, service: Precheck, request: Request,
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    node = _node_of(body.get("node_data"))
    return await run_in_threadpool(
        _governed_or_denied, lambda: service.add_node(cluster_id, node),
        f"node {node.get('id')} added to cluster {cluster_id}")


@router.post(
    "/remove-node/{cluster_id}",
    summary="Governed: remove a node from the registry (upstream gateway route)",
    openapi_extra=WRITE,
)
async def gateway_remove_node(
    cluster_id: str, service: Precheck, request: Request,
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    node_id = _node_id_of(body)
    return await run_in_threadpool(
        _governed_or_denied, lambda: service.remove_node(cluster_id, node_id),
        f"node {node_id} removed from cluster {cluster_id}")


class PolicyCommand(BaseModel):
    """Upstream's gateway reads mgmt_action and mgmt_data."""

    mgmt_action: str = Field(min_length=1, max_length=128)
    mgmt_data: Any = None


async def _manage(request: Request, service: PrecheckService, cluster_id: str, action: str,
                  body: PolicyCommand) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    result = await run_in_threadpool(
        manage_pre_check_policy, service, cluster_id, action, body.mgmt_action, body.mgmt_data)
    return {"success": True, "result": result}


@router.post(
    "/pre-checks/add-node/mgmt/{cluster_id}",
    summary="Management command of the cluster's add_node policy (upstream gateway route)",
    openapi_extra=WRITE,
)
async def gateway_add_node_policy_mgmt(
    cluster_id: str, service: Precheck, request: Request, body: PolicyCommand,
) -> dict[str, Any]:
    return await _manage(request, service, cluster_id, "add_node", body)


@router.post(
    "/pre-checks/remove-node/mgmt/{cluster_id}",
    summary="Management command of the cluster's remove_node policy (upstream gateway route)",
    openapi_extra=WRITE,
)
async def gateway_remove_node_policy_mgmt(
    cluster_id: str, service: Precheck, request: Request, body: PolicyCommand,
) -> dict[str, Any]:
    return await _manage(request, service, cluster_id, "remove_node", body)


@router.post(
    "/nodes/add-node-to-cluster/{cluster_id}",
    summary='Governed: add a node (the route upstream\'s parser calls; {"success", "data"})',
    openapi_extra=WRITE,
)
async def gateway_add_node_to_cluster(
    cluster_id: str, service: Precheck, request: Request, body: Annotated[Any, Body()] = None,
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    node = _node_of(body)
    return _ok(await run_in_threadpool(service.add_node, cluster_id, node))


@router.put(
    "/nodes-data", summary="Push the cluster's node data for the stability checker",
    openapi_extra=WRITE,
)
async def put_nodes_data(
    service: Precheck, request: Request, body: Annotated[list[Any], Body()],
    cluster_id: ClusterId = None,
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    check_cluster(request, P.CLUSTERS_WRITE, cid)
    await run_in_threadpool(request.app.state.runtime.stability.put_nodes, cid, body)
    return {"cluster_id": cid, "nodes": len(body)}


@router.get(
    "/check_stability", summary="The latest stability check of the cluster",
    openapi_extra=READ,
)
async def check_stability(
    service: Precheck, request: Request, cluster_id: ClusterId = None
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    check_cluster(request, P.CLUSTERS_READ, cid)
    latest = await run_in_threadpool(request.app.state.runtime.stability.latest, cid)
    # success and message: what upstream's stability checker answers on this route.
    message = "Cluster stability check passed" if latest.get("is_stable") else (
        "Cluster stability check failed")
    return {**latest, "success": True, "message": message}


class MgmtCommand(BaseModel):
    """Upstream's gateway sends block_id, service, mgmt_action, mgmt_data and
    instance_id; upstream's stability checker takes mgmt_action and mgmt_data alone."""

    block_id: str | None = ""
    service: str = Field("stability_checker", max_length=64)
    mgmt_action: str = Field(min_length=1, max_length=128)
    mgmt_data: Any = None
    instance_id: str | None = None


@router.post(
    "/mgmt", summary="Management command (stability_checker: set_policy, ...)",
    openapi_extra=requires(P.MGMT_WRITE),
)
async def mgmt(
    service: Precheck, request: Request, body: MgmtCommand, cluster_id: ClusterId = None
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    check_cluster(request, P.MGMT_WRITE, cid)
    answer = await run_in_threadpool(
        request.app.state.runtime.management.handle, cid, body.service, body.mgmt_action,
        body.mgmt_data,
    )
    # success and data: what upstream's stability checker answers (the gateway passes it on).
    return {**answer, "success": True, "data": answer.get("result", answer)}
