"""Run mode ``controller``: pre-check policy maps, decisions, governed cluster updates."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query
from fastapi.concurrency import run_in_threadpool

from policy_runtime.api.deps import precheck_service
from policy_runtime.governance.precheck import PrecheckService

router = APIRouter(tags=["controller (governance)"])
Precheck = Annotated[PrecheckService, Depends(precheck_service)]
ClusterId = Annotated[
    str | None, Query(max_length=128, description="default: the controller's AIOS_CLUSTER_ID")
]


@router.get("/pre-check-policies", summary="The action -> policy map of a cluster")
@router.get("/pre-check-policies/get", summary="The action -> policy map (upstream route)")
async def get_policy_map(service: Precheck, cluster_id: ClusterId = None) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    return {"cluster_id": cid, "actionsPolicyMap": await run_in_threadpool(service.policy_map, cid)}


@router.post(
    "/pre-check-policies/update",
    summary='Set actions\' policies: a URI sets, "" removes, unnamed actions stay',
)
async def update_policy_map(
    service: Precheck, body: Annotated[dict[str, Any], Body()], cluster_id: ClusterId = None
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    mapping = await run_in_threadpool(service.update_map, cid, body)
    return {"cluster_id": cid, "actionsPolicyMap": mapping}


@router.post("/pre-check/{action}", summary="Evaluate an action's pre-check policy")
async def pre_check(
    action: str, service: Precheck, body: Annotated[Any, Body()] = None,
    cluster_id: ClusterId = None,
) -> dict[str, Any]:
    cid = service.cluster_id(cluster_id)
    decision = await run_in_threadpool(service.decide, cid, action, body)
    return decision.to_dict()


@router.patch("/clusters/update/{cluster_id}", summary="Governed update (dotted-path fields)")
@router.put("/clusters/update/{cluster_id}", summary="Governed update (upstream route)")
async def governed_update(
    cluster_id: str, service: Precheck, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    return await run_in_threadpool(service.update_cluster, cluster_id, body)


@router.get("/decisions", summary="The latest pre-check decisions")
async def decisions(
    service: Precheck,
    cluster_id: ClusterId = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return await run_in_threadpool(
        service.log.latest, cluster_id=cluster_id, action=action, limit=limit
    )
