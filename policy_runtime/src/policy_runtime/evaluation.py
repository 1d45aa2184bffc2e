"""One decision: merge parameters and settings, validate, run in the sandbox, validate.

Shared by the CLI and the HTTP API so that a policy behaves the same everywhere.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
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
    # time limit of one JSON Schema validation (input, parameters, settings or result)
    schema_timeout_seconds: float = schemas.DEFAULT_TIMEOUT_SECONDS


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


# Schema validation is CPU-bound (bounded by LimitsConfig.schema_timeout_seconds); the
# service runs it in these threads so that the event loop keeps answering meanwhile.
_SCHEMA_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="schema")


def _has_schemas(policy: dict) -> bool:
    return any(policy.get(name) for name in schemas.SCHEMA_FIELDS)


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

    def _validate(self, schema: dict | None, value: Any, what: str, output: bool = False):
        schemas.validate(
            schema, value, what=what, output=output,
            timeout=self.limits.schema_timeout_seconds,
        )

    def _checked(self, policy: dict, result: Any, started: float) -> Outcome:
        """A successful result, once it matches the policy's output schema."""
        self._validate(policy.get("policy_output_schema"), result, "result", output=True)
        return Outcome(ok=True, result=result, duration_ms=_since(started))

    def _prepare(self, policy: dict, parameters: dict | None, settings: dict | None) -> tuple:
        merged_settings = {**(policy.get("policy_settings") or {}), **(settings or {})}
        merged_parameters = {**(policy.get("policy_parameters") or {}), **(parameters or {})}
        self._validate(policy.get("policy_settings_schema"), merged_settings, "settings")
        self._validate(
            policy.get("policy_parameters_schema"), merged_parameters, "parameters"
        )
        return merged_settings, merged_parameters

    def _eval_request(
        self, policy: dict, input_data: Any, parameters: dict | None, settings: dict | None,
        context: dict | None,
    ) -> PolicyCall:
        """Merge and validate everything an ``eval`` needs; raises InvalidInput."""
        merged_settings, merged_parameters = self._prepare(policy, parameters, settings)
        self._validate(policy.get("policy_input_schema"), input_data, "input_data")
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
            return self._checked(policy, self.pool.call(call), started)
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
        """evaluate() for an event loop (the HTTP service): schema validation, when the
        policy declares schemas, runs in a worker thread rather than on the loop."""
        started = time.perf_counter()
        try:
            if not _has_schemas(policy):
                call = self._eval_request(policy, input_data, parameters, settings, context)
                return self._checked(policy, await self.pool.acall(call), started)
            loop = asyncio.get_running_loop()
            call = await loop.run_in_executor(
                _SCHEMA_THREADS, self._eval_request, policy, input_data, parameters, settings,
                context,
            )
            result = await self.pool.acall(call)
            return await loop.run_in_executor(
                _SCHEMA_THREADS, self._checked, policy, result, started
            )
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
