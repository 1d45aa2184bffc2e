"""Run mode ``controller``: pre-check policy maps, decisions, governed cluster updates."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from policy_runtime.api.deps import precheck_service
from policy_runtime.api.guard import GuardedRoute, caller, check_cluster, requires
from policy_runtime.auth.permissions import Permission
from policy_runtime.governance import inputs
from policy_runtime.governance.precheck import PrecheckService

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
    return {"cluster_id": cid, "actionsPolicyMap": await run_in_threadpool(service.policy_map, cid)}


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
    return {"cluster_id": cid, "actionsPolicyMap": mapping}


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
@router.put(
    "/clusters/update/{cluster_id}", summary="Governed update (upstream route)",
    openapi_extra=WRITE,
)
async def governed_update(
    cluster_id: str, service: Precheck, request: Request,
    body: Annotated[dict[str, Any], Body()],
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    return await run_in_threadpool(service.update_cluster, cluster_id, body)


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


# The upstream gateway's routes, kept for existing clients; missing clusters are 404s.
@router.post(
    "/clusters/create", status_code=201, summary="Governed: add a cluster (upstream)",
    openapi_extra=WRITE,
)
async def gateway_create(
    service: Precheck, request: Request, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, body.get("id"))
    return await run_in_threadpool(service.create_cluster, body)


@router.get(
    "/clusters/read/{cluster_id}", summary="One cluster (upstream gateway route)",
    openapi_extra=READ,
)
async def gateway_read(cluster_id: str, service: Precheck, request: Request) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_READ, cluster_id)
    return await run_in_threadpool(service.clusters.get, cluster_id)


@router.delete(
    "/clusters/delete/{cluster_id}", summary="Remove a cluster (upstream route)",
    openapi_extra=WRITE,
)
async def gateway_delete(cluster_id: str, service: Precheck, request: Request) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    await run_in_threadpool(service.clusters.delete, cluster_id)
    return {"deleted": cluster_id}


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
    return await run_in_threadpool(request.app.state.runtime.stability.latest, cid)


class MgmtCommand(BaseModel):
    block_id: str = ""
    service: str
    mgmt_action: str = Field(min_length=1)
    mgmt_data: Any = None


@router.post(
    "/mgmt", summary="Management command (stability_checker: set_policy, ...)",
    openapi_extra=requires(P.MGMT_WRITE),
)
async def mgmt(
    service: Precheck, request: Request, body: MgmtCommand, cluster_id: ClusterId = None
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    check_cluster(request, P.MGMT_WRITE, cid)
    return await run_in_threadpool(
        request.app.state.runtime.management.handle, cid, body.service, body.mgmt_action,
        body.mgmt_data,
    )
