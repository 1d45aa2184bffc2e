"""Upstream AIOS policies-system routes for functions, jobs, executor infrastructure and
estimates: what this runtime answers instead of deploying policies.

Upstream's policies system could deploy a policy as a long-lived function (an OpenFaaS
service) or run it as a Kubernetes job, on an executor whose infrastructure it created.
Such a function or job runs the policy's code outside any sandbox, with the network and
the machine of its container. This runtime never does that: a policy runs only as a
decision in the sandbox, per request (``POST /execute_policy``, the executors'
``/executor/{id}/execute_policy``) or as a node of a graph (``POST /graph/execute_graph``).

So there is never a function to read or find: ``GET /function/{id}`` answers 404 and
``POST /function/query`` an empty list (after checking the filter as ``POST /policy/query``
does), which is what upstream's search server needs. The routes that would deploy, call,
log, schedule, provision or estimate answer 501 in upstream's envelope, saying what to
use instead; they are left out of the API document, which lists what is served. Each
still requires the token its upstream action would need.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from policy_runtime.api.errors import message_for, status_for
from policy_runtime.api.guard import GuardedRoute, requires
from policy_runtime.auth.permissions import Permission
from policy_runtime.upstream_policy import checked_filter

router = APIRouter(tags=["upstream compatibility: functions"], route_class=GuardedRoute)
P = Permission

_NO_FUNCTIONS = (
    "this runtime does not deploy policies as functions (a deployed function would run "
    "the policy's code outside the sandbox); evaluate the policy per request with "
    "POST /execute_policy (or POST /executor/{executor_id}/execute_policy), or chain "
    "policies in a graph with POST /graphs and POST /graph/execute_graph"
)
_NO_JOBS = (
    "this runtime does not run policies as jobs (a job would run the policy's code outside "
    "the sandbox); evaluate the policy per request with POST /execute_policy, whose answer "
    "is the job's output"
)
_NO_INFRA = (
    "this runtime does not create executor infrastructure; an executor is another policy "
    "runtime, deployed with the collection's policy_runtime role and registered with "
    "POST /executors"
)
_NO_ESTIMATES = (
    "this runtime deploys nothing, so there is nothing to estimate; a policy runs when "
    "evaluated (POST /execute_policy, POST /graph/execute_graph), in the sandbox within its "
    "timeout_seconds and memory_mb settings"
)
_NO_GRAPH_DEPLOYMENTS = (
    "this runtime does not deploy graphs; store the graph with POST /graphs (its nodes name "
    "published policies) and run it with POST /graph/execute_graph"
)


def _refused(message: str) -> JSONResponse:
    return JSONResponse({"success": False, "message": message}, status_code=501)


@router.get(
    "/function/{function_id}",
    summary="Read a deployed function (upstream route): none is ever deployed here",
    openapi_extra=requires(P.POLICIES_READ),
)
async def read_function(function_id: str) -> JSONResponse:
    return JSONResponse(
        {"success": False, "message": f"no function is deployed as {function_id!r}: "
         + _NO_FUNCTIONS},
        status_code=404,
    )


@router.post(
    "/function/query",
    summary="Deployed functions matching a MongoDB filter (upstream route): always none",
    openapi_extra=requires(P.POLICIES_READ),
)
async def query_functions(
    body: Annotated[Any, Body(description='a MongoDB filter, e.g. {"function_tags": "x"}')],
) -> JSONResponse:
    try:
        await run_in_threadpool(checked_filter, body)
    except Exception as exc:
        status = status_for(exc)
        if status == 500:
            raise
        return JSONResponse({"success": False, "message": message_for(exc)}, status_code=status)
    return JSONResponse({"success": True, "data": []})


# (method, path, permission, message, summary) of each upstream route refused with 501
REFUSED_ROUTES: tuple[tuple[str, str, Permission, str, str], ...] = (
    ("POST", "/function/deployments/create/{executor_id}", P.POLICIES_PUBLISH,
     _NO_FUNCTIONS, "Deploy a policy as a function"),
    ("POST", "/function/deployments/create-with-estimate/{executor_id}", P.POLICIES_PUBLISH,
     _NO_FUNCTIONS, "Deploy a policy as a function, estimated first"),
    ("DELETE", "/function/deployments/remove/{name}", P.POLICIES_DELETE,
     _NO_FUNCTIONS, "Remove a function deployment"),
    ("POST", "/function/call_function/{name}", P.POLICIES_EVAL,
     _NO_FUNCTIONS, "Call a deployed function"),
    ("GET", "/function/get_logs/{function_name}", P.POLICIES_READ,
     _NO_FUNCTIONS, "A deployed function's logs"),
    ("POST", "/jobs/submit/{executor_id}", P.POLICIES_PUBLISH, _NO_JOBS, "Run a policy as a job"),
    ("POST", "/jobs/submit-with-estimate/{executor_id}", P.POLICIES_PUBLISH,
     _NO_JOBS, "Run a policy as a job, estimated first"),
    ("GET", "/jobs/{job_id}", P.POLICIES_READ, _NO_JOBS, "Read a job"),
    ("POST", "/jobs/query", P.POLICIES_READ, _NO_JOBS, "Jobs matching a filter"),
    ("POST", "/executor/{executor_id}/create-infra", P.EXECUTORS_MANAGE,
     _NO_INFRA, "Create an executor's infrastructure"),
    ("DELETE", "/executor/{executor_id}/remove-infra", P.EXECUTORS_MANAGE,
     _NO_INFRA, "Remove an executor's infrastructure"),
    ("POST", "/executor/{executor_id}/estimator/estimate", P.EXECUTORS_READ,
     _NO_ESTIMATES, "Estimate a deployment's resources"),
    ("GET", "/graph/estimate-adhoc-graph/{executor_id}", P.EXECUTORS_READ,
     _NO_ESTIMATES, "Estimate an ad hoc graph's deployments"),
    ("GET", "/graph/deploy-adhoc-graph/{executor_id}", P.POLICIES_PUBLISH,
     _NO_GRAPH_DEPLOYMENTS, "Deploy an ad hoc graph as functions"),
    ("GET", "/graph/remove/{executor_id}", P.POLICIES_DELETE,
     _NO_GRAPH_DEPLOYMENTS, "Remove an ad hoc graph's deployments"),
)


def _refusing(message: str) -> Callable[[], Awaitable[JSONResponse]]:
    async def refuse() -> JSONResponse:
        return _refused(message)

    return refuse


for _method, _path, _permission, _message, _summary in REFUSED_ROUTES:
    router.add_api_route(
        _path,
        _refusing(_message),
        methods=[_method],
        summary=f"{_summary} (upstream route): not served, 501",
        openapi_extra=requires(_permission),
        # Not in the API document: it lists what the runtime serves (and every operation
        # it lists answers below 500). docs/compatibility/policies.md lists these routes.
        include_in_schema=False,
    )
