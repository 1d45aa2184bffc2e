"""The HTTP API: interLink's plugin routes, plus /resources, /node, /healthz and /metrics.

The TCP listener asks for ``Authorization: Bearer <token>`` on every route but /healthz.
interLink itself sends no token, so it talks to the plugin either over the Unix socket,
which is served by the same app built without the token check (there, the socket's file
mode is the access control), or through ``aios-nunet-forward``, which adds the token.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from interlink_nunet import __version__
from interlink_nunet.dms import DMSError
from interlink_nunet.jobs import PodRejected
from interlink_nunet.provider import NuNetProvider

JsonBody = Annotated[Any, Body()]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


def _bearer(token: str | None):
    def check(credentials: Credentials) -> None:
        if token is None:
            return
        presented = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(presented, token.encode()):
            raise HTTPException(401, "missing or invalid bearer token: send "
                                "'Authorization: Bearer <token>'",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


def create_app(provider: NuNetProvider, token: str | None) -> FastAPI:
    # No interactive docs: they would be the one part of the TCP listener open without the
    # token. The routes are interLink's plugin API (see README).
    app = FastAPI(title="NuNet interLink plugin", version=__version__, openapi_url=None,
                  docs_url=None, redoc_url=None)
    api = APIRouter(dependencies=[Depends(_bearer(token))])
    metrics = provider.metrics

    @app.exception_handler(PodRejected)
    async def rejected(_: Request, exc: PodRejected) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(DMSError)
    async def dms_failed(_: Request, exc: DMSError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.middleware("http")
    async def count(request: Request, call_next):
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.requests.labels(getattr(route, "path", "unmatched"),
                                str(response.status_code)).inc()
        return response

    @api.post("/create", summary="Create pods as NuNet jobs")
    def create(body: JsonBody) -> Any:
        return provider.create(body)

    @api.post("/delete", summary="Delete a pod's NuNet job")
    def delete(body: JsonBody) -> str:
        return provider.delete(body)

    @api.get("/status", summary="Status of pods; an empty list is interLink's ping")
    def status(body: JsonBody) -> Any:
        return provider.status(body)

    @api.get("/getLogs", summary="Logs of a pod's NuNet job", response_class=PlainTextResponse)
    def get_logs(body: JsonBody) -> str:
        return provider.logs(body)

    @api.get("/resources", summary="What the NuNet peers offer, un-prefixed")
    def resources(of: Literal["allocatable", "capacity"] = Query("allocatable")) -> dict:
        consolidated = provider.consolidated()
        return (consolidated.allocatable if of == "allocatable" else consolidated.capacity).table()

    @api.get("/node", summary="The virtual node's capacity and allocatable")
    def node() -> dict:
        return provider.node_status()

    @api.get("/metrics", summary="Prometheus metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", summary="Liveness (no token)")
    def healthz() -> dict:
        return {"status": "ok", "mapped_jobs": provider.store.count()}

    app.include_router(api)
    return app
