"""One decision: merge parameters and settings, validate, run in the sandbox, validate.

Shared by the CLI and the HTTP API so that a policy behaves the same everywhere.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from policy_runtime import schemas
from policy_runtime.errors import InvalidInput, PolicyRuntimeError
from policy_runtime.sandbox.pool import PolicyCall, WorkerPool


@dataclass(frozen=True)
class LimitsConfig:
    """Defaults for a policy's limits and the service-wide caps no policy can exceed."""

    default_timeout_seconds: float = 2.0
    max_timeout_seconds: float = 30.0
    default_memory_mb: int = 256
    max_memory_mb: int = 1024


@dataclass(frozen=True)
class Outcome:
    """The result of one decision, in the shape the CLI and the API print."""

    ok: bool
    result: Any = None
    error: dict | None = None
    duration_ms: float = 0.0

    def to_dict(self) -> dict:
        if self.ok:
            return {"ok": True, "result": self.result, "duration_ms": round(self.duration_ms, 3)}
        return {"ok": False, "error": self.error}

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else self.error["type"]


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _failed(error: PolicyRuntimeError, started: float) -> Outcome:
    return Outcome(ok=False, error=error.to_dict(), duration_ms=_since(started))


def _checked(policy: dict, result: Any, started: float) -> Outcome:
    """A successful result, once it matches the policy's output schema."""
    schemas.validate(policy.get("policy_output_schema"), result, what="result", output=True)
    return Outcome(ok=True, result=result, duration_ms=_since(started))


def _positive(settings: dict, key: str, default: float) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidInput(f"settings.{key} must be a positive number, got {value!r}")
    return float(value)


class PolicyEvaluator:
    """Evaluates stored policy documents (dicts with ``code`` and upstream fields)."""

    def __init__(self, pool: WorkerPool, limits: LimitsConfig) -> None:
        self.pool = pool
        self.limits = limits

    def _request(self, policy: dict, op: str, settings: dict, parameters: dict, **extra: Any):
        timeout = min(
            _positive(settings, "timeout_seconds", self.limits.default_timeout_seconds),
            self.limits.max_timeout_seconds,
        )
        memory = min(
            int(_positive(settings, "memory_mb", self.limits.default_memory_mb)),
            self.limits.max_memory_mb,
        )
        return PolicyCall(
            op=op,
            source=policy["code"],
            timeout_seconds=timeout,
            memory_mb=memory,
            rule_id=policy.get("policy_rule_uri", ""),
            settings=settings,
            parameters=parameters,
            **extra,
        )

    def _call(self, policy: dict, op: str, settings: dict, parameters: dict, **extra: Any) -> Any:
        return self.pool.call(self._request(policy, op, settings, parameters, **extra))

    def _prepare(self, policy: dict, parameters: dict | None, settings: dict | None) -> tuple:
        merged_settings = {**(policy.get("policy_settings") or {}), **(settings or {})}
        merged_parameters = {**(policy.get("policy_parameters") or {}), **(parameters or {})}
        schemas.validate(policy.get("policy_settings_schema"), merged_settings, what="settings")
        schemas.validate(
            policy.get("policy_parameters_schema"), merged_parameters, what="parameters"
        )
        return merged_settings, merged_parameters

    def _eval_request(
        self, policy: dict, input_data: Any, parameters: dict | None, settings: dict | None,
        context: dict | None,
    ) -> PolicyCall:
        """Merge and validate everything an ``eval`` needs; raises InvalidInput."""
        merged_settings, merged_parameters = self._prepare(policy, parameters, settings)
        schemas.validate(policy.get("policy_input_schema"), input_data, what="input_data")
        return self._request(
            policy,
            "eval",
            merged_settings,
            merged_parameters,
            input_data=input_data,
            context={"policy_rule_uri": policy.get("policy_rule_uri", ""), **(context or {})},
        )

    def evaluate(
        self,
        policy: dict,
        input_data: Any,
        *,
        parameters: dict | None = None,
        settings: dict | None = None,
        context: dict | None = None,
    ) -> Outcome:
        """Run ``eval``; failures come back as an Outcome with ``ok=False``, never raised."""
        started = time.perf_counter()
        try:
            call = self._eval_request(policy, input_data, parameters, settings, context)
            return _checked(policy, self.pool.call(call), started)
        except PolicyRuntimeError as exc:
            return _failed(exc, started)

    async def evaluate_async(
        self,
        policy: dict,
        input_data: Any,
        *,
        parameters: dict | None = None,
        settings: dict | None = None,
        context: dict | None = None,
    ) -> Outcome:
        """evaluate() for an event loop (the HTTP service)."""
        started = time.perf_counter()
        try:
            call = self._eval_request(policy, input_data, parameters, settings, context)
            return _checked(policy, await self.pool.acall(call), started)
        except PolicyRuntimeError as exc:
            return _failed(exc, started)

    def manage(
        self, policy: dict, action: str, data: Any, *, parameters: dict | None = None
    ) -> Outcome:
        """Run the policy's ``management(action, data)`` method."""
        started = time.perf_counter()
        try:
            merged_settings, merged_parameters = self._prepare(policy, parameters, None)
            result = self._call(
                policy, "manage", merged_settings, merged_parameters, action=action, data=data
            )
        except PolicyRuntimeError as exc:
            return _failed(exc, started)
        return Outcome(ok=True, result=result, duration_ms=_since(started))

    def check(self, source: str) -> dict:
        """Compile the source and check its contract in a worker; raises typed errors."""
        return self.pool.call(
            PolicyCall(
                op="check",
                source=source,
                timeout_seconds=self.limits.default_timeout_seconds,
                memory_mb=self.limits.default_memory_mb,
            )
        )
