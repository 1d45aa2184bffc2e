"""``create_app(settings)``: the FastAPI application for the configured run modes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer

from policy_runtime import __version__
from policy_runtime.api.errors import install_handlers
from policy_runtime.api.middleware import BearerAuthMiddleware, BodySizeLimitMiddleware
from policy_runtime.api.routes import compat, policies, system
from policy_runtime.config import RunMode, Settings
from policy_runtime.state import Runtime

ROUTERS_BY_MODE = {
    RunMode.POLICIES: (policies.router, compat.router),
}

# Documents the bearer scheme in OpenAPI; enforcement is BearerAuthMiddleware's job.
_bearer = HTTPBearer(auto_error=False, description="the AIOS_API_TOKEN of the runtime")


def create_app(settings: Settings) -> FastAPI:
    """Build the app; ConfigError if the settings cannot work (e.g. no token)."""
    token = settings.resolve_token()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.runtime = await run_in_threadpool(Runtime.start, settings)
        try:
            yield
        finally:
            await run_in_threadpool(app.state.runtime.close)

    app = FastAPI(
        title="AIOS policy runtime",
        version=__version__,
        description="Stores policies and runs them in a RestrictedPython sandbox.",
        lifespan=lifespan,
        dependencies=[Security(_bearer)],
    )
    app.include_router(system.router)
    for mode in settings.run_modes:
        for router in ROUTERS_BY_MODE[mode]:
            app.include_router(router)
    install_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(BearerAuthMiddleware, token=token, exempt=system.PUBLIC_PATHS)
    return app
