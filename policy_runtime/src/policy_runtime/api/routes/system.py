"""Health, version and metrics: served in every run mode."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from policy_runtime import __version__
from policy_runtime.api.deps import runtime
from policy_runtime.api.guard import GuardedRoute, requires
from policy_runtime.auth.permissions import Permission
from policy_runtime.state import Runtime

router = APIRouter(tags=["system"], route_class=GuardedRoute)
RuntimeDep = Annotated[Runtime, Depends(runtime)]

# The paths that answer without a token.
PUBLIC_PATHS = frozenset({"/healthz", "/version"})


@router.get("/healthz", summary="Liveness and readiness (no token needed)")
async def healthz(rt: RuntimeDep) -> JSONResponse:
    healthy = rt.database_healthy
    body = {"status": "ok" if healthy else "unavailable", "database": "ok" if healthy else "down"}
    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/version", summary="Version, git commit and build date (no token needed)")
async def version(rt: RuntimeDep) -> dict:
    return {
        "version": __version__,
        "git_commit": rt.settings.git_commit or "unknown",
        "build_date": rt.settings.build_date or "unknown",
        "run_modes": [m.value for m in rt.settings.run_modes],
    }


@router.get(
    "/metrics", summary="Prometheus metrics",
    openapi_extra=requires(Permission.METRICS_READ),
)
async def metrics(rt: RuntimeDep) -> Response:
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)
