"""A controller's remote policy execution, through the policies system.

The controller posts ``{"policy_rule_uri", "input_data", "parameters"}`` to
``<AIOS_POLICIES_URL>/executor/<executor id>/execute_policy``; the policies system
forwards it to the executor. The result contract is the local one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from policy_runtime.executors.client import (
    RemoteExecutionError,
    RemoteUnreachable,
    execute_policy,
)

# What the policies system answers when it cannot reach the executor.
BAD_GATEWAY = 502


@dataclass(frozen=True)
class RemoteResult:
    ok: bool
    result: Any
    error: str
    duration_ms: float
    # ok, failed (the policy failed there), unreachable (no answer), bad_answer (an
    # answer without a result) or not_configured: what the metrics count.
    outcome: str = "ok"


@dataclass(frozen=True)
class RemoteExecution:
    policies_url: str
    token: str | None
    timeout_seconds: float

    def evaluate(
        self, executor_id: str, uri: str, input_data: Any, parameters: dict
    ) -> RemoteResult:
        started = time.perf_counter()
        if not self.policies_url:
            return RemoteResult(False, None, "remote execution needs AIOS_POLICIES_URL", 0.0,
                                "not_configured")
        if not executor_id:
            return RemoteResult(False, None, "remote execution needs an executor id "
                                "(config.policyExecutorId or POLICY_SYSTEM_EXECUTOR_ID)", 0.0,
                                "not_configured")
        base = self.policies_url.rstrip("/")
        url = f"{base}/executor/{quote(executor_id, safe='')}/execute_policy"
        try:
            status, envelope = execute_policy(url, self.token, uri, input_data, parameters,
                                              timeout=self.timeout_seconds)
        except RemoteExecutionError as exc:
            outcome = "unreachable" if isinstance(exc, RemoteUnreachable) else "bad_answer"
            return RemoteResult(False, None, str(exc), (time.perf_counter() - started) * 1000,
                                outcome)
        duration = (time.perf_counter() - started) * 1000
        if envelope.get("success"):
            return RemoteResult(True, envelope.get("data"), "", duration)
        # 502: the policies system answered, but could not reach the executor.
        return RemoteResult(False, None, str(envelope.get("message") or "remote failure"), duration,
                            "unreachable" if status == BAD_GATEWAY else "failed")

    def policy_exists(self, uri: str) -> bool:
        url = f"{self.policies_url.rstrip('/')}/policies/{quote(uri, safe=':')}"
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = httpx.get(url, headers=headers, timeout=self.timeout_seconds)
        except httpx.HTTPError as exc:
            raise RemoteExecutionError(f"cannot reach the policies system: {exc}") from None
        if response.status_code == 403:
            # An executor token may evaluate but not read policies: ask the evaluation
            # route instead, which answers 404 for a policy that does not exist.
            url = f"{url}/eval"
            try:
                response = httpx.post(url, json={"input_data": {}}, headers=headers,
                                      timeout=self.timeout_seconds)
            except httpx.HTTPError as exc:
                raise RemoteExecutionError(f"cannot reach the policies system: {exc}") from None
            if response.status_code in (422, 504):
                return True  # it exists: it refused or outlasted the probe's empty input
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise RemoteExecutionError(f"{url} answered {response.status_code}")
        return True
