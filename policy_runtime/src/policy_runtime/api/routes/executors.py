"""Run mode ``policies``: the executor registry and upstream's forwarding route.

Registering an executor is an operator's act: its URL must be in the allow-list
(AIOS_EXECUTOR_ALLOWED_HOSTS), and it gets an ``executor`` token of its own, created with
it and shown once in the answer, which is the only token ever sent to it. The ids of
AIOS_LOCAL_EXECUTOR_IDS are answered by this runtime's own sandbox and cannot be registered.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from policy_runtime.api.deps import policy_service
from policy_runtime.api.guard import GuardedRoute, caller, requires
from policy_runtime.api.routes.compat import execute_here
from policy_runtime.auth.permissions import Permission, Role
from policy_runtime.auth.tokens import TokenConflict, TokenNotFound
from policy_runtime.config import EXECUTOR_ID
from policy_runtime.executors.allowlist import AllowList, UrlNotAllowed, check_resolved
from policy_runtime.executors.client import RemoteExecutionError, execute_policy
from policy_runtime.executors.registry import (
    ExecutorConflict,
    ExecutorRegistry,
    InvalidExecutor,
    checked_url,
)
from policy_runtime.models import ExecutePolicyRequest
from policy_runtime.service import PolicyService

router = APIRouter(tags=["executors"], route_class=GuardedRoute)
P = Permission


async def registry(request: Request) -> ExecutorRegistry:
    return request.app.state.runtime.executors


Registry = Annotated[ExecutorRegistry, Depends(registry)]
Service = Annotated[PolicyService, Depends(policy_service)]


class ExecutorCreate(BaseModel):
    id: str = Field(pattern=f"^{EXECUTOR_ID.pattern}$")
    url: str = Field(max_length=2000, description="base URL of a runtime in policies mode")


def executor_token_name(executor_id: str) -> str:
    return f"executor-{executor_id}"


def _register(request: Request, executors: ExecutorRegistry, body: ExecutorCreate) -> dict:
    settings = request.app.state.runtime.settings
    url = checked_url(body.url)
    try:
        AllowList(settings.executor_allowed_hosts).check_url(url)
    except UrlNotAllowed as exc:
        raise InvalidExecutor(str(exc)) from None
    if body.id in settings.local_executor_ids:
        raise ExecutorConflict(
            f"executor id {body.id!r} is answered by this policies system itself "
            "(AIOS_LOCAL_EXECUTOR_IDS); register the executor under another id, or take "
            "the id out of that setting first"
        )
    if executors.exists(body.id):
        raise ExecutorConflict(f"executor {body.id!r} is registered already")
    tokens = request.app.state.tokens
    name = executor_token_name(body.id)
    principal = caller(request)
    try:
        secret, _ = tokens.create(
            name, Role.EXECUTOR.value, created_by=principal.name if principal else ""
        )
    except TokenConflict:
        # A token of an earlier executor with this id: it is retired for the new one.
        tokens.delete(name)
        secret, _ = tokens.create(name, Role.EXECUTOR.value)
    try:
        document = executors.register(body.id, url, token=secret, token_name=name)
    except ExecutorConflict:
        tokens.delete(name)
        raise
    return {**document, "token_name": name, "token": secret}


@router.post(
    "/executors", status_code=status.HTTP_201_CREATED,
    summary="Register an executor; the answer holds its own executor token, shown once",
    openapi_extra=requires(P.EXECUTORS_MANAGE),
)
async def register(body: ExecutorCreate, executors: Registry, request: Request) -> dict[str, Any]:
    return await run_in_threadpool(_register, request, executors, body)


@router.get(
    "/executors", summary="Registered executors", openapi_extra=requires(P.EXECUTORS_READ)
)
async def list_executors(executors: Registry) -> list[dict[str, Any]]:
    return await run_in_threadpool(executors.list)


@router.get(
    "/executors/{executor_id}",
    summary="One registered executor: its id and URL (never its token)",
    openapi_extra=requires(P.EXECUTORS_READ),
)
async def get_executor(executor_id: str, executors: Registry) -> dict[str, Any]:
    # The registry's get() leaves the token and its name out; an unknown id is a 404
    # that names it.
    return await run_in_threadpool(executors.get, executor_id)


def _unregister(request: Request, executors: ExecutorRegistry, executor_id: str) -> None:
    document = executors.delete(executor_id)
    if document.get("token_name"):
        try:
            request.app.state.tokens.revoke(document["token_name"])
        except TokenNotFound:
            pass


@router.delete(
    "/executors/{executor_id}", status_code=status.HTTP_204_NO_CONTENT,
    summary="Unregister (its executor token is revoked)",
    openapi_extra=requires(P.EXECUTORS_MANAGE),
)
async def unregister(executor_id: str, executors: Registry, request: Request) -> Response:
    await run_in_threadpool(_unregister, request, executors, executor_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _forward(request: Request, executors: ExecutorRegistry, executor_id: str,
             body: ExecutePolicyRequest) -> tuple[int, dict]:
    executor = executors.get_with_token(executor_id)
    url = f"{executor['url']}/execute_policy"
    try:
        check_resolved(url)
    except UrlNotAllowed as exc:
        raise RemoteExecutionError(str(exc)) from None
    return execute_policy(
        url, executor.get("token") or None,  # its own token, never this runtime's
        body.policy_rule_uri, body.input_data, body.parameters or {},
        timeout=request.app.state.runtime.settings.remote_timeout_seconds,
    )


@router.post(
    "/executor/{executor_id}/execute_policy",
    summary="Evaluate a policy on a registered executor (upstream route)",
    openapi_extra=requires(P.POLICIES_EVAL),
)
async def forward(
    executor_id: str, body: ExecutePolicyRequest, executors: Registry, service: Service,
    request: Request,
) -> JSONResponse:
    if executor_id in request.app.state.runtime.settings.local_executor_ids:
        # Upstream's services post remote decisions to a fixed executor id; on a
        # management cluster without that executor, this runtime's own sandbox answers.
        return await execute_here(body, service)
    try:
        status_code, envelope = await run_in_threadpool(
            _forward, request, executors, executor_id, body
        )
    except RemoteExecutionError as exc:
        return JSONResponse(
            {"success": False, "message": f"executor {executor_id}: {exc}"},
            status_code=status.HTTP_502_BAD_GATEWAY,
        )
    return JSONResponse(envelope, status_code=status_code)
