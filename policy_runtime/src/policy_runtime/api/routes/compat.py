"""Upstream AIOS policies-system routes, answering upstream's envelope.

``{"success": true, "data": ...}`` or ``{"success": false, "message": ...}``, but with
a real HTTP status on failure instead of upstream's 200.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from policy_runtime.api.deps import policy_service
from policy_runtime.api.errors import message_for, status_for
from policy_runtime.api.guard import GuardedRoute, caller, requires
from policy_runtime.api.routes.policies import eval_status
from policy_runtime.auth.permissions import Permission
from policy_runtime.models import EvalRequest, ExecutePolicyRequest, PolicyCreate
from policy_runtime.service import PolicyService

router = APIRouter(tags=["upstream compatibility"], route_class=GuardedRoute)
P = Permission
Service = Annotated[PolicyService, Depends(policy_service)]


async def _envelope(action: Callable[[], Any], success_status: int = 200) -> JSONResponse:
    try:
        data = await run_in_threadpool(action)
    except Exception as exc:
        if status_for(exc) == 500:
            raise
        return JSONResponse(
            {"success": False, "message": message_for(exc)}, status_code=status_for(exc)
        )
    return JSONResponse({"success": True, "data": data}, status_code=success_status)


@router.post(
    "/policy", summary="Publish a policy (upstream route)",
    openapi_extra=requires(P.POLICIES_PUBLISH),
)
async def create_policy(body: PolicyCreate, service: Service, request: Request) -> JSONResponse:
    principal = caller(request)
    if principal is not None:
        principal.require_policy_name(body.name)

    def publish() -> dict:
        document, created = service.publish(body)
        return {"policy_rule_uri": document["policy_rule_uri"], "created": created}

    return await _envelope(publish, success_status=201)


@router.get(
    "/policy/{uri}", summary="Read a policy (upstream route)",
    openapi_extra=requires(P.POLICIES_READ),
)
async def read_policy(uri: str, service: Service) -> JSONResponse:
    return await _envelope(lambda: service.get(uri))


@router.delete(
    "/policy/{uri}", summary="Delete a policy (upstream route)",
    openapi_extra=requires(P.POLICIES_DELETE),
)
async def delete_policy(
    uri: str, service: Service, force: Annotated[bool, Query()] = False
) -> JSONResponse:
    def delete() -> dict:
        service.delete(uri, force=force)
        return {"deleted": uri}

    return await _envelope(delete)


@router.post(
    "/execute_policy", summary="Evaluate a policy (upstream route)",
    openapi_extra=requires(P.POLICIES_EVAL),
)
async def execute_policy(body: ExecutePolicyRequest, service: Service) -> JSONResponse:
    request = EvalRequest(input_data=body.input_data, parameters=body.parameters or {})
    try:
        outcome = await service.evaluate(body.policy_rule_uri, request)
    except Exception as exc:
        if status_for(exc) == 500:
            raise
        return JSONResponse(
            {"success": False, "message": message_for(exc)}, status_code=status_for(exc)
        )
    if outcome.ok:
        return JSONResponse({"success": True, "data": outcome.result})
    error = outcome.error or {}
    return JSONResponse(
        {"success": False, "message": f"{error.get('type')}: {error.get('message')}"},
        status_code=eval_status(outcome.error_type),
    )
