"""Upstream AIOS policies-system routes, answering upstream's envelope.

``{"success": true, "data": ...}`` or ``{"success": false, "message": ...}``, but with
a real HTTP status on failure instead of upstream's 200. Success answers 200, the status
upstream's ``PolicyDBClient`` checks. The policy routes take and answer upstream's whole
``PolicyRule`` record (upstream_policy.py); a ``code`` that is the URL of an archive is
fetched once, from an allowed host (archive_fetch.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from policy_runtime import package
from policy_runtime.api.deps import policy_service
from policy_runtime.api.errors import message_for, status_for
from policy_runtime.api.guard import GuardedRoute, caller, requires
from policy_runtime.api.routes.policies import eval_status
from policy_runtime.archive_fetch import FetchedArchive, fetch_archive
from policy_runtime.auth.permissions import Permission
from policy_runtime.clusters.query_limits import bounded
from policy_runtime.models import EvalRequest, ExecutePolicyRequest
from policy_runtime.service import PolicyNotFound, PolicyService
from policy_runtime.upstream_policy import (
    UpstreamRecord,
    checked_filter,
    parse,
    plan_update,
    record_view,
)

router = APIRouter(tags=["upstream compatibility"], route_class=GuardedRoute)
P = Permission
Service = Annotated[PolicyService, Depends(policy_service)]
Record = Annotated[dict[str, Any], Body(description="an upstream AIOS PolicyRule record")]
# Most policies one POST /policy/query answers (upstream answered all of them).
MAX_QUERY_RESULTS = 1000


def _failure(exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"success": False, "message": message_for(exc)}, status_code=status_for(exc)
    )


async def _envelope(action: Callable[[], Any], success_status: int = 200) -> JSONResponse:
    try:
        data = await run_in_threadpool(action)
    except Exception as exc:
        if status_for(exc) == 500:
            raise
        return _failure(exc)
    return JSONResponse({"success": True, "data": data}, status_code=success_status)


def _fetcher(
    request: Request, service: PolicyService
) -> Callable[[UpstreamRecord], tuple[str, FetchedArchive]]:
    """Fetch a record's code URL (allowed hosts only) and unpack its source."""
    settings = request.app.state.runtime.settings

    def source_of(record: UpstreamRecord) -> tuple[str, FetchedArchive]:
        assert record.code_url is not None
        archive = fetch_archive(
            record.code_url,
            allowed_hosts=list(settings.policy_archive_allowed_hosts),
            max_bytes=settings.policy_archive_max_bytes,
            timeout=settings.policy_archive_timeout_seconds,
        )
        try:
            source = package.source_from_archive(archive.data, service.max_code_bytes)
        except package.ArchiveError as exc:
            raise type(exc)(f"the archive at code URL {record.code_url!r}: {exc}") from None
        return source, archive

    return source_of


async def _parsed(body: Any, request: Request) -> UpstreamRecord | JSONResponse:
    """The record, its name checked against the caller's scope; or the failure answer."""
    try:
        record = parse(body)
    except Exception as exc:
        if status_for(exc) == 500:
            raise
        return _failure(exc)
    principal = caller(request)
    if principal is not None:
        principal.require_policy_name(record.policy.name)
    return record


@router.post(
    "/policy",
    summary="Publish a policy (upstream route, upstream PolicyRule record)",
    openapi_extra=requires(P.POLICIES_PUBLISH),
)
async def create_policy(body: Record, service: Service, request: Request) -> JSONResponse:
    record = await _parsed(body, request)
    if isinstance(record, JSONResponse):
        return record
    source_of = _fetcher(request, service)

    def publish() -> dict:
        policy, archive = record.policy, None
        if record.code_url is not None:
            existing = service.store.get(record.uri)
            if (
                existing is not None
                and policy.policy_rule_uri in (None, record.uri)
                and (existing.get("upstream") or {}).get("code") == record.code_url
            ):  # published from this URL already: the same code, nothing to fetch
                return {"policy_rule_uri": record.uri, "created": False}
            source, archive = source_of(record)
            policy = record.with_source(source)
        document, created = service.publish(policy, extra=record.stored_fields(archive))
        return {"policy_rule_uri": document["policy_rule_uri"], "created": created}

    return await _envelope(publish)


@router.get(
    "/policy/{uri}",
    summary="Read a policy (upstream route)",
    openapi_extra=requires(P.POLICIES_READ),
)
async def read_policy(uri: str, service: Service) -> JSONResponse:
    return await _envelope(lambda: record_view(service.get(uri)))


@router.put(
    "/policy/{uri}",
    summary="Update what describes a published policy (upstream route; its code and "
    "behaviour stay as published)",
    openapi_extra=requires(P.POLICIES_PUBLISH),
)
async def update_policy(uri: str, body: Record, service: Service, request: Request) -> JSONResponse:
    record = await _parsed(body, request)
    if isinstance(record, JSONResponse):
        return record
    source_of = _fetcher(request, service)

    def update() -> dict:
        existing = service.store.get(uri)  # not the read cache: the stored document
        if existing is None:
            raise PolicyNotFound(service.not_found_message(uri))
        plan = plan_update(
            uri,
            existing,
            record,
            source_of=source_of,
            taken=service.store.taken,
            max_code_bytes=service.max_code_bytes,
        )
        service.update_fields(uri, plan.set_fields)
        return {"policy_rule_uri": uri, "updated": plan.changed}

    return await _envelope(update)


@router.post(
    "/policy/query",
    summary="Policies matching a MongoDB filter (upstream route)",
    openapi_extra=requires(P.POLICIES_READ),
)
async def query_policies(
    body: Annotated[
        dict[str, Any], Body(description='a MongoDB filter, e.g. {"type": "precheck"}')
    ],
    service: Service,
    request: Request,
    skip: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_QUERY_RESULTS)] = MAX_QUERY_RESULTS,
) -> JSONResponse:
    seconds = request.app.state.runtime.settings.query_timeout_seconds

    def query() -> list[dict]:
        filter_ = checked_filter(body)
        found = bounded(seconds, lambda: service.store.query(filter_, skip=skip, limit=limit))
        return [record_view(document) for document in found]

    return await _envelope(query)


@router.delete(
    "/policy/{uri}",
    summary="Delete a policy (upstream route)",
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
    "/execute_policy",
    summary="Evaluate a policy (upstream route)",
    openapi_extra=requires(P.POLICIES_EVAL),
)
async def execute_policy(body: ExecutePolicyRequest, service: Service) -> JSONResponse:
    return await execute_here(body, service)


async def execute_here(body: ExecutePolicyRequest, service: PolicyService) -> JSONResponse:
    """Evaluate in this runtime's sandbox, in upstream's envelope (also the answer of an
    executor id this runtime answers itself, AIOS_LOCAL_EXECUTOR_IDS)."""
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
