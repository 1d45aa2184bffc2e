"""Run mode ``policies``: the policy store and executor."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse

from policy_runtime.api.deps import MAX_SKIP, policy_service
from policy_runtime.api.fast_body import read_body, request_body_schema
from policy_runtime.api.guard import GuardedRoute, caller, direct, requires
from policy_runtime.auth.permissions import Permission
from policy_runtime.models import EvalRequest, EvalResponse, PolicyCreate, PolicyPage, PublishResult
from policy_runtime.service import PolicyService

router = APIRouter(prefix="/policies", tags=["policies"], route_class=GuardedRoute)
P = Permission
Service = Annotated[PolicyService, Depends(policy_service)]


def eval_status(outcome_error_type: str | None) -> int:
    if outcome_error_type is None:
        return status.HTTP_200_OK
    if outcome_error_type == "Timeout":
        return status.HTTP_504_GATEWAY_TIMEOUT
    return status.HTTP_422_UNPROCESSABLE_ENTITY


# First in the router: the hot path is matched before the others.
@router.post(
    "/{uri}/eval",
    response_model=EvalResponse,
    responses={422: {"model": EvalResponse}, 504: {"model": EvalResponse}},
    summary="Evaluate a policy once",
    openapi_extra=requires(P.POLICIES_EVAL, **request_body_schema(EvalRequest)),
)
@direct
async def evaluate(uri: str, request: Request) -> JSONResponse:
    # The hot path: the body is parsed by pydantic directly (see read_body) rather than
    # through FastAPI's dependency solving, which costs more than the decision itself.
    body = await read_body(request, EvalRequest)
    principal = caller(request)
    if principal is not None and body.cluster_id is not None:
        # A decision for a cluster reads and writes that cluster's persisted policy
        # context, so a cluster owner may name only their own clusters.
        principal.require_cluster_context(body.cluster_id)
    # read_body kept the body: its size bounds the values to validate
    size = len(await request.body())
    outcome = await request.app.state.runtime.policies.evaluate(uri, body, size)
    return JSONResponse(
        # what the policy printed or logged comes back only when there is some
        outcome.to_dict(with_output=bool(outcome.printed or outcome.logs)),
        status_code=eval_status(outcome.error_type),
    )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=PublishResult,
    summary="Publish a policy version (immutable; the same code again answers 200)",
    openapi_extra=requires(P.POLICIES_PUBLISH),
)
def publish(
    body: PolicyCreate, service: Service, response: Response, request: Request
) -> PublishResult:
    principal = caller(request)
    if principal is not None:
        principal.require_policy_name(body.name)
    document, created = service.publish(body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return PublishResult(policy_rule_uri=document["policy_rule_uri"], created=created)


@router.get(
    "", response_model=PolicyPage, summary="List published policies (without code)",
    openapi_extra=requires(P.POLICIES_READ),
)
def list_policies(
    service: Service,
    name: Annotated[str | None, Query(max_length=200, description="name prefix")] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    skip: Annotated[int, Query(ge=0, le=MAX_SKIP)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> PolicyPage:
    items, total = service.store.list(name=name, tag=tag, skip=skip, limit=limit)
    return PolicyPage(total=total, skip=skip, limit=limit, items=items)


@router.get("/{uri}", summary="One policy with its code", openapi_extra=requires(P.POLICIES_READ))
def get_policy(uri: str, service: Service) -> dict:
    return service.get(uri)


@router.delete(
    "/{uri}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a policy (its URI is never reused); 409 while clusters run it",
    openapi_extra=requires(P.POLICIES_DELETE),
)
def delete_policy(
    uri: str,
    service: Service,
    force: Annotated[
        bool, Query(description="delete although clusters run it (recorded in the decision log)")
    ] = False,
) -> Response:
    service.delete(uri, force=force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
