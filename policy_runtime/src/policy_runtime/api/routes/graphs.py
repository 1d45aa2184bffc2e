"""Upstream AIOS policies-system graph routes, answering upstream's envelope.

``{"success": true, "data": ...}`` with 200, as upstream answered and its search server
checks; failures ``{"success": false, "message"}`` with a real status (404, 409, 422,
400 for a filter outside the allow-list...) where upstream answered 200 or 500. A graph's
nodes name published policies; ``POST /graph/execute_graph`` evaluates them in the
sandbox (graphs/execution.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from policy_runtime.api.deps import policy_service
from policy_runtime.api.errors import message_for, status_for
from policy_runtime.api.guard import GuardedRoute, caller, requires
from policy_runtime.api.routes.policies import eval_status
from policy_runtime.auth.permissions import Permission
from policy_runtime.clusters.query_limits import bounded
from policy_runtime.graphs import record as graph_record
from policy_runtime.graphs.errors import (
    BadGraphRequest,
    GraphConflict,
    GraphError,
    GraphNotFound,
    InvalidGraph,
    NodeFailed,
)
from policy_runtime.graphs.execution import execute
from policy_runtime.graphs.store import GraphStore
from policy_runtime.models import EvalRequest
from policy_runtime.service import PolicyService
from policy_runtime.upstream_policy import checked_filter

router = APIRouter(tags=["upstream compatibility: graphs"], route_class=GuardedRoute)
P = Permission
Service = Annotated[PolicyService, Depends(policy_service)]
GraphBody = Annotated[Any, Body(description="an upstream AIOS graph record")]
# Most graphs one POST /graphs/query answers (upstream answered all of them).
MAX_QUERY_RESULTS = 1000


async def graph_store(request: Request) -> GraphStore:
    return request.app.state.runtime.graphs


Store = Annotated[GraphStore, Depends(graph_store)]


def _status(exc: Exception) -> int:
    if isinstance(exc, NodeFailed):
        return eval_status(exc.error_type)
    if isinstance(exc, GraphError):
        return exc.status
    return status_for(exc)


async def _envelope(action: Callable[[], Awaitable[Any]]) -> JSONResponse:
    try:
        data = await action()
    except Exception as exc:
        status = _status(exc)
        if status == 500:
            raise
        message = str(exc) if isinstance(exc, GraphError) else message_for(exc)
        return JSONResponse({"success": False, "message": message}, status_code=status)
    return JSONResponse({"success": True, "data": data})


def _in_thread(action: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    return lambda: run_in_threadpool(action)


def _parsed(body: Any, request: Request) -> graph_record.GraphRecord:
    """The record, its name checked against the caller's policy name prefixes."""
    record = graph_record.parse(body)
    principal = caller(request)
    if principal is not None:
        principal.require_policy_name(record.graph_name)
    return record


def _check_published(service: PolicyService, nodes: list[str]) -> None:
    found = service.store.query({"policy_rule_uri": {"$in": nodes}}, limit=len(nodes))
    published = {document["policy_rule_uri"] for document in found}
    missing = [node for node in nodes if node not in published]
    if missing:
        raise InvalidGraph(
            f"graph_function_ids: {service.not_found_message(missing[0])}"
            + (f" (nor {len(missing) - 1} more: " + ", ".join(map(repr, missing[1:6])) + ")"
               if len(missing) > 1 else "")
            + "; each node names the policy_rule_uri of a published policy: publish it first "
            "(POST /policy)"
        )


@router.post(
    "/graphs",
    summary="Store a graph of published policies (upstream route, upstream Graph record)",
    openapi_extra=requires(P.POLICIES_PUBLISH),
)
async def create_graph(
    body: GraphBody, store: Store, service: Service, request: Request
) -> JSONResponse:
    def create() -> dict:
        record = _parsed(body, request)
        _check_published(service, record.graph_function_ids)
        stored = store.create(graph_record.to_document(record))
        if stored is None:
            raise GraphConflict(
                f"another graph is stored as {record.uri!r}; change it with "
                f"PUT /graphs/{record.uri}, or give this one another graph_version"
            )
        return {"graph_uri": record.uri, "created": stored[1]}

    return await _envelope(_in_thread(create))


@router.get(
    "/graphs/{graph_uri}",
    summary="Read a graph (upstream route)",
    openapi_extra=requires(P.POLICIES_READ),
)
async def read_graph(graph_uri: str, store: Store) -> JSONResponse:
    def read() -> dict:
        document = store.get(graph_uri)
        if document is None:
            raise GraphNotFound(f"no graph is stored as {graph_uri!r}")
        return graph_record.view(document)

    return await _envelope(_in_thread(read))


@router.put(
    "/graphs/{graph_uri}",
    summary="Replace a graph (upstream route, upstream Graph record)",
    openapi_extra=requires(P.POLICIES_PUBLISH),
)
async def update_graph(
    graph_uri: str, body: GraphBody, store: Store, service: Service, request: Request
) -> JSONResponse:
    def update() -> dict:
        record = _parsed(body, request)
        if record.uri != graph_uri:
            raise InvalidGraph(
                f"the record names graph {record.uri!r} (graph_name, graph_version, "
                f"graph_release_tag); PUT /graphs/{graph_uri} replaces {graph_uri!r} only"
            )
        _check_published(service, record.graph_function_ids)
        if not store.replace(graph_uri, graph_record.to_document(record)):
            raise GraphNotFound(
                f"no graph is stored as {graph_uri!r}; create it with POST /graphs"
            )
        return {"graph_uri": graph_uri}

    return await _envelope(_in_thread(update))


@router.delete(
    "/graphs/{graph_uri}",
    summary="Delete a graph (upstream route; its policies stay published)",
    openapi_extra=requires(P.POLICIES_DELETE),
)
async def delete_graph(graph_uri: str, store: Store) -> JSONResponse:
    def delete() -> dict:
        if not store.delete(graph_uri):
            raise GraphNotFound(f"no graph is stored as {graph_uri!r}")
        return {"graph_uri": graph_uri}

    return await _envelope(_in_thread(delete))


@router.post(
    "/graphs/query",
    summary="Graphs matching a MongoDB filter (upstream route; the filter passes the "
    "operator allow-list of POST /policy/query)",
    openapi_extra=requires(P.POLICIES_READ),
)
async def query_graphs(
    body: Annotated[Any, Body(description='a MongoDB filter, e.g. {"graph_name": "x"}')],
    store: Store,
    request: Request,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_QUERY_RESULTS)] = MAX_QUERY_RESULTS,
) -> JSONResponse:
    seconds = request.app.state.runtime.settings.query_timeout_seconds

    def query() -> list[dict]:
        filter_ = checked_filter(body)
        found = bounded(seconds, lambda: store.query(filter_, skip=skip, limit=limit))
        return [graph_record.view(document) for document in found]

    return await _envelope(_in_thread(query))


@router.post(
    "/graph/execute_graph",
    summary="Run a stored graph: each node's policy evaluated in the sandbox, in DAG "
    "order (upstream route)",
    openapi_extra=requires(P.POLICIES_EVAL),
)
async def execute_graph(
    body: Annotated[Any, Body(description='{"graph_uri": ..., "input_data": ...}')],
    store: Store,
    service: Service,
) -> JSONResponse:
    async def run() -> Any:
        if not isinstance(body, dict):
            raise BadGraphRequest('the body must be {"graph_uri": ..., "input_data": ...}')
        uri = body.get("graph_uri")
        if not isinstance(uri, str) or not uri:
            raise BadGraphRequest("graph_uri: required, the URI of a stored graph")
        if body.get("input_data") is None:
            raise BadGraphRequest(
                "input_data: required, what the graph's first nodes evaluate"
            )
        graph = await run_in_threadpool(store.get, uri)
        if graph is None:
            raise GraphNotFound(f"no graph is stored as {uri!r}")

        def evaluate(policy_uri: str, input_data: Any) -> Awaitable:
            return service.evaluate(policy_uri, EvalRequest(input_data=input_data))

        return await execute(graph, body["input_data"], evaluate)

    return await _envelope(run)
