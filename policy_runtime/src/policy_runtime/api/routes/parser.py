"""Upstream AIOS parser route that the node script calls, onto the governed action.

Upstream's node script (``k8s/onboarding/node/join-node.py``) posts the parser's envelope
``{"header": {"templateUri": "Parser/V1", ...}, "body": {"spec": {"values": ...}}}`` to
``POST /api/addNode`` and runs ``kubeadm join`` only when the answer is a success status.
Here the route is the cluster's governed ``add_node`` action itself (its pre-check policy
decides, its enforcement mode applies). The parser's other onboarding route,
``POST /api/createCluster``, is served by the clusters registry (api/routes/clusters.py).
The answer is the parser's
``{"success": true, "task_id": "", "result": ...}``; a refusal is
``{"success": false, "message": ...}`` with a real HTTP status (403 for a policy's denial,
with the decision's fields), so a client that checks the status never joins a refused node.

The node may be given as the parser reads it (``values.clusterId`` and ``values.nodeData``)
or as the node script sends it (the node's fields directly in ``values``, with its
``clusterId`` among them); without a cluster id the controller's own cluster is meant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from policy_runtime.api.deps import precheck_service
from policy_runtime.api.errors import message_for, status_for
from policy_runtime.api.guard import GuardedRoute, check_cluster, requires
from policy_runtime.auth.permissions import Permission
from policy_runtime.governance.precheck import MissingClusterId, PolicyDenied, PrecheckService

router = APIRouter(tags=["upstream compatibility (parser)"], route_class=GuardedRoute)
P = Permission
Precheck = Annotated[PrecheckService, Depends(precheck_service)]
TEMPLATE = "Parser/V1"


class EnvelopeError(ValueError):
    """A body that is not the parser's envelope."""


def _values(body: Any) -> dict[str, Any]:
    """``body.spec.values`` of the parser's envelope."""
    if not isinstance(body, dict):
        raise EnvelopeError("the body must be the parser's envelope, a JSON object")
    header = body.get("header")
    if header is not None and not isinstance(header, dict):
        raise EnvelopeError("header must be an object")
    template = (header or {}).get("templateUri", TEMPLATE)
    if template != TEMPLATE:
        raise EnvelopeError(f"templateUri {template!r} is not supported; use {TEMPLATE!r}")
    values: Any = body
    for key in ("body", "spec", "values"):
        values = values.get(key) if isinstance(values, dict) else None
    if not isinstance(values, dict):
        raise EnvelopeError("body.spec.values must be an object")
    return values


def node_of(values: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(cluster id, node document) from the parser's or the node script's values."""
    cluster_id = values.get("clusterId")
    if cluster_id is not None and not isinstance(cluster_id, str):
        raise EnvelopeError("clusterId must be a string")
    node = values.get("nodeData", values)
    if not isinstance(node, dict):
        raise EnvelopeError("nodeData must be an object")
    # The node script puts the cluster's id among the node's fields; the node has none.
    return cluster_id or None, {k: v for k, v in node.items() if k != "clusterId"}


async def _answer(action: Callable[[], Any]) -> JSONResponse:
    try:
        result = await run_in_threadpool(action)
    except PolicyDenied as exc:
        return JSONResponse(
            {
                "success": False,
                "message": exc.decision.reason or "denied by policy",
                **exc.decision.denial(),
            },
            status_code=403,
        )
    except Exception as exc:
        if status_for(exc) == 500:
            raise
        return JSONResponse(
            {"success": False, "message": message_for(exc)}, status_code=status_for(exc)
        )
    return JSONResponse({"success": True, "task_id": "", "result": result})


@router.post(
    "/api/addNode",
    summary="Governed: add a node (upstream parser route)",
    openapi_extra=requires(P.CLUSTERS_WRITE),
)
async def add_node(
    service: Precheck, request: Request, body: Annotated[Any, Body()] = None
) -> JSONResponse:
    try:
        cluster_id, node = node_of(_values(body))
        cid = service.cluster_id(cluster_id)
    except (EnvelopeError, MissingClusterId) as exc:
        return JSONResponse({"success": False, "message": str(exc)}, status_code=400)
    check_cluster(request, P.CLUSTERS_WRITE, cid)
    return await _answer(lambda: service.add_node(cid, node))
