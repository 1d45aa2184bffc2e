"""Run mode ``policies``: the executor registry and upstream's forwarding route."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from policy_runtime.executors.client import RemoteExecutionError, execute_policy
from policy_runtime.executors.registry import ExecutorRegistry
from policy_runtime.models import ExecutePolicyRequest

router = APIRouter(tags=["executors"])


async def registry(request: Request) -> ExecutorRegistry:
    return request.app.state.runtime.executors


Registry = Annotated[ExecutorRegistry, Depends(registry)]


class ExecutorCreate(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
    url: str = Field(max_length=2000, description="base URL of a runtime in policies mode")


@router.post("/executors", status_code=status.HTTP_201_CREATED, summary="Register an executor")
async def register(body: ExecutorCreate, executors: Registry) -> dict[str, Any]:
    return await run_in_threadpool(executors.register, body.id, body.url)


@router.get("/executors", summary="Registered executors")
async def list_executors(executors: Registry) -> list[dict[str, Any]]:
    return await run_in_threadpool(executors.list)


@router.delete(
    "/executors/{executor_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Unregister"
)
async def unregister(executor_id: str, executors: Registry) -> Response:
    await run_in_threadpool(executors.delete, executor_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/executor/{executor_id}/execute_policy",
    summary="Evaluate a policy on a registered executor (upstream route)",
)
async def forward(
    executor_id: str, body: ExecutePolicyRequest, executors: Registry, request: Request
) -> JSONResponse:
    executor = await run_in_threadpool(executors.get, executor_id)
    runtime = request.app.state.runtime
    try:
        status_code, envelope = await run_in_threadpool(
            lambda: execute_policy(
                f"{executor['url']}/execute_policy",
                runtime.remote_token,
                body.policy_rule_uri, body.input_data, body.parameters or {},
                timeout=runtime.settings.remote_timeout_seconds,
            )
        )
    except RemoteExecutionError as exc:
        return JSONResponse(
            {"success": False, "message": f"executor {executor_id}: {exc}"},
            status_code=status.HTTP_502_BAD_GATEWAY,
        )
    return JSONResponse(envelope, status_code=status_code)
