"""Per-route permissions.

Every API route declares the permission it needs with ``requires(...)`` (kept in the
route's OpenAPI operation as ``x-aios-permission``, so the docs show it too). The route
class checks it against the caller the auth middleware identified before the route's
own code runs; a route that declares none refuses every token (fail closed). Scope
checks (which cluster, which policy name) happen in the route, through ``caller``.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from policy_runtime.api.errors import status_for
from policy_runtime.auth.permissions import WRITE_PERMISSIONS, Permission
from policy_runtime.auth.principal import SCOPE_KEY, Forbidden, Principal

PERMISSION_KEY = "x-aios-permission"


def requires(permission: Permission, **openapi_extra: Any) -> dict[str, Any]:
    return {**openapi_extra, PERMISSION_KEY: permission.value}


def route_permission(route: object) -> Permission | None:
    extra = getattr(route, "openapi_extra", None) or {}
    value = extra.get(PERMISSION_KEY)
    return Permission(value) if value else None


def served_routes(routes: list) -> list:
    """The routes an app serves: included routers are expanded into their routes."""
    flat = []
    for route in routes:
        if hasattr(route, "effective_candidates"):
            flat.extend(route.effective_candidates())
        else:
            flat.append(route)
    return flat


def check_declared(routes: list, public: frozenset[str]) -> None:
    """RuntimeError naming an API route that declares no permission: the app is not built
    with one (the route class would refuse every token on it anyway)."""
    for served in served_routes(routes):
        route = getattr(served, "original_route", served)  # FastAPI's included-route view
        if not isinstance(route, APIRoute) or served.path in public:
            continue
        if not isinstance(route, GuardedRoute) or route_permission(route) is None:
            raise RuntimeError(
                f"route {sorted(route.methods)} {served.path} declares no permission: use "
                "route_class=GuardedRoute and openapi_extra=requires(...)"
            )


def forbidden_response(exc: Forbidden) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "permission": exc.permission}, status_code=403)


def caller(request: Request) -> Principal | None:
    """The caller; None only when the runtime serves without auth."""
    return request.scope.get(SCOPE_KEY)


def check_cluster(request: Request, permission: Permission, cluster_id: object) -> None:
    principal = request.scope.get(SCOPE_KEY)
    if principal is not None:
        principal.require_cluster(permission, cluster_id)


def direct(endpoint: Callable[..., Coroutine[Any, Any, Response]]) -> Callable:
    """Mark a hot-path endpoint to be called directly: with the request and its path
    parameters, bypassing FastAPI's per-request dependency solving and response handling.
    Such an endpoint reads and validates its own body (fast_body.read_body) and returns a
    Response; its signature still documents it in OpenAPI."""
    endpoint.__aios_direct__ = True  # type: ignore[attr-defined]
    return endpoint


class GuardedRoute(APIRoute):
    def _direct_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            return await endpoint(request=request, **request.path_params)

        return handler

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        if getattr(self.endpoint, "__aios_direct__", False):
            handler = self._direct_handler()
        else:
            handler = super().get_route_handler()
        permission = route_permission(self)
        path = self.path
        audited = permission in WRITE_PERMISSIONS

        async def guarded(request: Request) -> Response:
            principal = request.scope.get(SCOPE_KEY)
            if principal is not None:
                if permission is None:
                    return JSONResponse(
                        {"detail": f"route {path} declares no permission: refused"},
                        status_code=403,
                    )
                if permission not in principal.permissions:
                    return forbidden_response(principal.lacks(permission))
            if not audited or principal is None:
                try:
                    return await handler(request)
                except Forbidden as exc:
                    return forbidden_response(exc)
            status = 500
            try:
                response = await handler(request)
                status = response.status_code
                return response
            except Forbidden as exc:
                status = 403
                return forbidden_response(exc)
            except Exception as exc:
                status = _status_of(exc)
                raise
            finally:
                await _audit(request, principal, permission, status)

        return guarded


def _status_of(exc: Exception) -> int:
    if isinstance(exc, RequestValidationError):
        return 422
    return getattr(exc, "status_code", None) or status_for(exc)


async def _audit(request: Request, principal: Principal, permission: Permission,
                 status: int) -> None:
    audit = getattr(request.app.state, "audit", None)
    if audit is not None:
        await run_in_threadpool(
            audit.record, token=principal.name, role=principal.role.value,
            permission=permission.value, method=request.method, path=request.url.path,
            status=status,
        )
