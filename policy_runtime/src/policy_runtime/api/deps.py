"""Dependencies shared by the routers."""

from __future__ import annotations

from fastapi import Request

from policy_runtime.service import PolicyService
from policy_runtime.state import Runtime


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def policy_service(request: Request) -> PolicyService:
    return request.app.state.runtime.policies
