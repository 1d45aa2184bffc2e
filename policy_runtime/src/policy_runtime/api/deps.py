"""Dependencies shared by the routers.

They are ``async`` on purpose: FastAPI runs plain ``def`` dependencies in its thread
pool, a thread hop per request for what is an attribute lookup.
"""

from __future__ import annotations

from fastapi import Request

from policy_runtime.clusters.store import ClusterStore
from policy_runtime.governance.precheck import PrecheckService
from policy_runtime.service import PolicyService
from policy_runtime.state import Runtime


async def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def policy_service(request: Request) -> PolicyService:
    return request.app.state.runtime.policies


async def cluster_store(request: Request) -> ClusterStore:
    return request.app.state.runtime.clusters


async def precheck_service(request: Request) -> PrecheckService:
    return request.app.state.runtime.precheck

# The largest page offset a listing accepts: the database refuses offsets beyond a 64-bit
# integer with an error (a 500), and no real listing comes near a billion entries.
MAX_SKIP = 1_000_000_000
