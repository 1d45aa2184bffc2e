"""``create_app(settings)``: the FastAPI application for the configured run modes."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi

from policy_runtime import __version__
from policy_runtime.api.errors import install_handlers
from policy_runtime.api.guard import check_declared
from policy_runtime.api.middleware import BearerAuthMiddleware, BodySizeLimitMiddleware
from policy_runtime.api.routes import (
    action_inputs,
    clusters,
    compat,
    controller,
    executors,
    functions,
    graphs,
    parser,
    policies,
    system,
    tokens,
)
from policy_runtime.api.strict_json import StrictJsonMiddleware
from policy_runtime.api.unexpected_errors import UnexpectedErrorMiddleware
from policy_runtime.auth.audit import AuditLog
from policy_runtime.auth.tokens import TokenStore
from policy_runtime.config import RunMode, Settings
from policy_runtime.governance import inputs
from policy_runtime.state import Runtime, _ensure_indexes

ROUTERS_BY_MODE = {
    RunMode.POLICIES: (
        policies.router, compat.router, executors.router, graphs.router, functions.router
    ),
    RunMode.CLUSTERS: (clusters.router,),
    RunMode.CONTROLLER: (controller.router, parser.router),
}

# How the API documents its bearer token. Enforcement is BearerAuthMiddleware's job, so
# the scheme is written into the OpenAPI document instead of being a dependency that
# FastAPI would solve on every request.
_SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "the bootstrap AIOS_API_TOKEN (admin) or a scoped token made with "
        "POST /tokens or `aios-policy token create`; each operation names the permission it "
        "needs in x-aios-permission (none for /healthz, /version)",
    }
}


def _openapi_with_bearer(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )
            schema.setdefault("components", {})["securitySchemes"] = _SECURITY_SCHEMES
            # what each governed action hands its policy: Node, Cluster, AddNodeInput ...
            schema["components"].setdefault("schemas", {}).update(inputs.openapi_components())
            for path, operations in schema["paths"].items():
                if path not in system.PUBLIC_PATHS:
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _auth_stores(app: FastAPI, provisioned: list[dict]) -> tuple[TokenStore, AuditLog]:
    runtime = app.state.runtime
    settings = runtime.settings
    db = runtime.client[settings.db_name]
    store = TokenStore(db, settings.token_cache_seconds, provisioned=provisioned,
                       tokens_file=str(settings.tokens_file or ""))
    audit = AuditLog(db)
    _ensure_indexes(store.ensure_indexes)
    _ensure_indexes(audit.ensure_indexes)
    store.check_provisioned()
    return store, audit


def create_app(settings: Settings) -> FastAPI:
    """Build the app; ConfigError if the settings cannot work (e.g. no token)."""
    token = settings.resolve_token()
    provisioned = settings.provisioned_tokens()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = await run_in_threadpool(Runtime.start, settings)
        if app.state.runtime.pool is not None:
            # decisions reach the sandbox workers from this loop, not through threads
            app.state.runtime.pool.drive_from(asyncio.get_running_loop())
        app.state.tokens, app.state.audit = await run_in_threadpool(
            _auth_stores, app, provisioned
        )
        # What start-up made (modules, the app, the stores) lives as long as the process:
        # kept out of the collector's full passes, which then take milliseconds, not tens.
        gc.freeze()
        try:
            yield
        finally:
            await run_in_threadpool(app.state.runtime.close)

    app = FastAPI(
        title="AIOS policy runtime",
        version=__version__,
        description="Stores policies and runs them in a RestrictedPython sandbox.",
        lifespan=lifespan,
    )
    app.openapi = _openapi_with_bearer(app)  # type: ignore[method-assign]
    # Routes are matched in order: the busiest (decisions) come first.
    for mode in sorted(settings.run_modes, key=list(ROUTERS_BY_MODE).index):
        for router in ROUTERS_BY_MODE[mode]:
            app.include_router(router)
    app.include_router(action_inputs.router)
    app.include_router(tokens.router)
    app.include_router(system.router)
    check_declared(app.routes, system.PUBLIC_PATHS)
    install_handlers(app)
    # Outermost last: unexpected errors, auth, the size limit, then the body's values.
    app.add_middleware(StrictJsonMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    docs = (app.openapi_url, app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    docs_paths = frozenset(p for p in docs if p)
    app.add_middleware(
        BearerAuthMiddleware, token=token, exempt=system.PUBLIC_PATHS, state=app.state,
        docs_paths=docs_paths,
    )
    app.add_middleware(UnexpectedErrorMiddleware)
    return app
