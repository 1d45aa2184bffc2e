"""Run mode ``clusters``: the clusters registry (upstream's clusters-db-service).

docs/compatibility/clusters.md lists what upstream's callers send here and read back.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, status
from fastapi.concurrency import run_in_threadpool

from policy_runtime.api.deps import MAX_SKIP, cluster_store
from policy_runtime.api.guard import GuardedRoute, caller, check_cluster, requires
from policy_runtime.auth.permissions import Permission
from policy_runtime.clusters.store import MAX_QUERY_LIMIT, ClusterStore, InvalidCluster
from policy_runtime.governance.precheck import create_without_controller
from policy_runtime.models import ClusterPage

router = APIRouter(tags=["clusters"], route_class=GuardedRoute)
P = Permission
Store = Annotated[ClusterStore, Depends(cluster_store)]
JsonObject = Annotated[dict[str, Any], Body()]

_PARSER_TEMPLATE = "Parser/V1"


@router.post(
    "/clusters/query", summary="Clusters matching a MongoDB filter",
    openapi_extra=requires(P.CLUSTERS_READ),
)
async def query_clusters(
    store: Store,
    body: JsonObject,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_QUERY_LIMIT)] = 100,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    sort: Annotated[str | None, Query(max_length=200, description="e.g. -gpus.count,id")] = None,
    fields: Annotated[str | None, Query(max_length=500, description="comma list")] = None,
) -> list[dict[str, Any]]:
    # The body is the filter itself or, as upstream clients send it, {"query": ...}.
    filter_ = body["query"] if set(body) == {"query"} and isinstance(body["query"], dict) else body
    principal = caller(request)
    if principal is not None and principal.clusters is not None:
        # A cluster-owner's query only ever sees its own clusters.
        filter_ = {"$and": [filter_, {"id": {"$in": sorted(principal.clusters)}}]}
    return await run_in_threadpool(
        store.query, filter_, limit=limit, skip=skip, sort=sort, fields=fields
    )


@router.get(
    "/clusters",
    response_model=ClusterPage,
    summary="List clusters (without per-node data), filtered by region, status or tag",
    openapi_extra=requires(P.CLUSTERS_READ),
)
async def list_clusters(
    store: Store,
    request: Request,
    region: Annotated[str | None, Query(max_length=200, description="regionId")] = None,
    status_: Annotated[str | None, Query(alias="status", max_length=200)] = None,
    tag: Annotated[str | None, Query(max_length=200, description="one of tags")] = None,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ClusterPage:
    principal = caller(request)
    if principal is not None and principal.clusters is not None:
        items, total = await run_in_threadpool(
            _scoped_list, store, sorted(principal.clusters), region, status_, tag, skip, limit
        )
        return ClusterPage(total=total, skip=skip, limit=limit, items=items)
    items, total = await run_in_threadpool(
        store.list, region=region, status=status_, tag=tag, skip=skip, limit=limit
    )
    return ClusterPage(total=total, skip=skip, limit=limit, items=items)


def _scoped_list(
    store: ClusterStore, ids: list[str], region: str | None, status_: str | None,
    tag: str | None, skip: int, limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """GET /clusters for a cluster-owner: the page of its own clusters only."""
    filter_: dict[str, Any] = {"id": {"$in": ids}}
    for field, value in (("regionId", region), ("status", status_), ("tags", tag)):
        if value is not None:
            filter_[field] = value
    found = sorted(store.query(filter_, limit=MAX_QUERY_LIMIT), key=lambda c: str(c.get("id")))
    for cluster in found:
        for node in cluster.get("nodes") or []:
            if isinstance(node, dict):
                node.pop("nodeData", None)
    return found[skip:skip + limit], len(found)


def governed_create(request: Request, document: dict[str, Any]) -> dict[str, Any]:
    """Every route that creates a cluster: the add_cluster pre-check of the controller's
    own cluster when this runtime is a controller; without controller mode, a runtime
    whose own cluster governs add_cluster refuses (see create_without_controller)."""
    runtime = request.app.state.runtime
    if runtime.precheck is not None:
        return runtime.precheck.create_cluster(document)
    return create_without_controller(runtime.clusters, runtime.settings.cluster_id, document)


@router.post(
    "/clusters", status_code=status.HTTP_201_CREATED,
    summary="Add a cluster (governed by the controller's add_cluster policy)",
    openapi_extra=requires(P.CLUSTERS_WRITE),
)
async def create_cluster(request: Request, body: JsonObject) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, body.get("id"))
    return await run_in_threadpool(governed_create, request, body)


# Upstream's parser answers 200 {"success": true, ...}, and upstream's onboarding script
# (k8s/onboarding/cluster/onboard.py) counts only a 200 as onboarded.
@router.post(
    "/api/createCluster",
    summary="Add a cluster (upstream parser route; raw document or Parser/V1 envelope; 200)",
    openapi_extra=requires(P.CLUSTERS_WRITE),
)
async def create_cluster_upstream(request: Request, body: JsonObject) -> dict[str, Any]:
    document = body
    header = body.get("header")
    if isinstance(header, dict) and header.get("templateUri") == _PARSER_TEMPLATE:
        document = ((body.get("body") or {}).get("spec") or {}).get("values")
        if not isinstance(document, dict):
            raise InvalidCluster("a Parser/V1 request carries the cluster in body.spec.values")
    check_cluster(request, P.CLUSTERS_WRITE, document.get("id"))
    created = await run_in_threadpool(governed_create, request, document)
    return {"success": True, "data": created}


@router.get(
    "/clusters/{cluster_id}", summary="One cluster", openapi_extra=requires(P.CLUSTERS_READ)
)
async def get_cluster(cluster_id: str, store: Store, request: Request) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_READ, cluster_id)
    return await run_in_threadpool(store.get, cluster_id)


@router.put(
    "/clusters/{cluster_id}", summary="Update a cluster with MongoDB update syntax",
    openapi_extra=requires(P.CLUSTERS_WRITE),
)
async def update_cluster(
    cluster_id: str, store: Store, body: JsonObject, request: Request
) -> dict[str, Any]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    return await run_in_threadpool(store.update, cluster_id, body)


# Upstream's registry answers a delete with 200 and this body, and its clients read the
# body (response.json()) after checking the status: a 204 without a body fails them.
DELETED = {"message": "Cluster deleted"}


@router.delete(
    "/clusters/{cluster_id}", summary="Remove a cluster (200 {\"message\": \"Cluster deleted\"})",
    openapi_extra=requires(P.CLUSTERS_WRITE),
)
async def delete_cluster(cluster_id: str, store: Store, request: Request) -> dict[str, str]:
    check_cluster(request, P.CLUSTERS_WRITE, cluster_id)
    await run_in_threadpool(store.delete, cluster_id)
    return dict(DELETED)
