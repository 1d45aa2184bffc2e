"""Admin routes: scoped API tokens and the audit log (served in every run mode)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from policy_runtime.api.guard import GuardedRoute, caller, requires
from policy_runtime.auth.permissions import Permission, permission_table
from policy_runtime.auth.tokens import (
    InvalidToken,
    TokenConflict,
    TokenNotFound,
    TokenProvisioned,
)
from policy_runtime.models import TokenCreate

router = APIRouter(tags=["tokens (admin)"], route_class=GuardedRoute)
MANAGE = requires(Permission.TOKENS_MANAGE)


def _invalid(field: str, message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"type": "value_error", "loc": ("body", field), "msg": message, "input": None}]
    )


@router.post(
    "/tokens", status_code=status.HTTP_201_CREATED, openapi_extra=MANAGE,
    summary="Create a scoped token; the answer holds the token, shown this once",
)
async def create_token(body: TokenCreate, request: Request) -> dict[str, Any]:
    store = request.app.state.tokens
    principal = caller(request)
    try:
        secret, record = await run_in_threadpool(
            lambda: store.create(
                body.name, body.role, clusters=body.clusters,
                policy_prefixes=body.policy_prefixes, expires=body.expires,
                created_by=principal.name if principal else "",
            )
        )
    except InvalidToken as exc:
        raise _invalid(exc.field, str(exc)) from None
    except TokenConflict as exc:
        raise _invalid("name", str(exc)) from None
    return {**record, "token": secret}


@router.get(
    "/tokens", openapi_extra=MANAGE,
    summary="Tokens (never their secrets); source: store (made through the API or the CLI) "
    "or file (AIOS_TOKENS_FILE)",
)
async def list_tokens(request: Request) -> list[dict[str, Any]]:
    return await run_in_threadpool(request.app.state.tokens.list)


@router.get("/tokens/roles", openapi_extra=MANAGE, summary="Every role's permissions")
async def roles() -> dict[str, list[str]]:
    return permission_table()


@router.get("/tokens/{name}", openapi_extra=MANAGE, summary="One token (never its secret)")
async def get_token(name: str, request: Request) -> JSONResponse:
    try:
        return JSONResponse(await run_in_threadpool(request.app.state.tokens.get, name))
    except TokenNotFound as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)


@router.delete(
    "/tokens/{name}", openapi_extra=MANAGE,
    summary="Revoke a token: every replica refuses it within a second (409 for a token of "
    "the tokens file, which only a new file changes)",
)
async def revoke_token(name: str, request: Request) -> JSONResponse:
    try:
        return JSONResponse(await run_in_threadpool(request.app.state.tokens.revoke, name))
    except TokenNotFound as exc:
        return JSONResponse({"detail": str(exc)}, status_code=404)
    except TokenProvisioned as exc:
        return JSONResponse({"detail": str(exc)}, status_code=409)


@router.get("/audit", openapi_extra=MANAGE, summary="The latest writes and the token of each")
async def audit(
    request: Request,
    token: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    return await run_in_threadpool(
        lambda: request.app.state.audit.latest(token=token, limit=limit)
    )
