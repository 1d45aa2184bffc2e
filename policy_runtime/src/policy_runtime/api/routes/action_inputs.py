"""What each governed action hands its policy, as JSON Schemas (served in every run mode).

A policy author's reference: the same schemas the OpenAPI document shows as components
(``AddNodeInput``, ...) and ``aios-policy test`` checks test cases against. Public schema
information, so it needs the permission the OpenAPI document needs: ``docs:read``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from policy_runtime.api.guard import GuardedRoute, requires
from policy_runtime.auth.permissions import Permission
from policy_runtime.governance import inputs
from policy_runtime.governance.actions import UnknownAction

router = APIRouter(tags=["policy authoring"], route_class=GuardedRoute)
READ = requires(Permission.DOCS_READ)


@router.get(
    "/action-inputs", openapi_extra=READ,
    summary="The input_data each governed action (and the stability check) hands its "
            "policy: action -> JSON Schema",
)
async def action_inputs() -> dict[str, Any]:
    return inputs.all_schemas()


@router.get(
    "/action-inputs/{action}", openapi_extra=READ,
    summary="The JSON Schema of the input_data one action hands its policy (upstream "
            "aliases accepted); 404 naming the known actions",
    responses={404: {"description": "not an action with an input schema"}},
)
async def action_input(action: str) -> Any:
    try:
        return inputs.input_schema(action)
    except UnknownAction as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
