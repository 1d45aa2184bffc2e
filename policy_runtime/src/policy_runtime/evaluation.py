"""One decision: merge parameters and settings, validate, run in the sandbox, validate.

Shared by the CLI and the HTTP API so that a policy behaves the same everywhere.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import functools
import json
import random
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from policy_runtime import schemas
from policy_runtime.errors import InvalidInput, PolicyError, PolicyRuntimeError
from policy_runtime.sandbox.pool import CallAnswer, PolicyCall, WorkerPool
from policy_runtime.store.context import (
    ContextConflict,
    ContextSlot,
    ContextStore,
    encode_state,
)

# A decision whose context store lost the compare-and-set (another decision on the same
# policy and cluster stored first) runs again on the newer context, this many times.
CONTEXT_ATTEMPTS = 50
_RESERVED_CONTEXT_KEYS = ("policy_rule_uri",)


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
    # what the policy printed and logged: {"printed": str, "logs": [{level, logger,
    # message}, ...]}, also when it failed
    output: dict = field(default_factory=dict)

    def to_dict(self, *, with_output: bool = False) -> dict:
        if self.ok:
            shown = {"ok": True, "result": self.result, "duration_ms": round(self.duration_ms, 3)}
        else:
            shown = {"ok": False, "error": self.error}
        if with_output:
            shown.update(printed=self.printed, logs=self.logs)
        return shown

    @property
    def printed(self) -> str:
        return str(self.output.get("printed") or "")

    @property
    def logs(self) -> list[dict]:
        return list(self.output.get("logs") or [])

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else self.error["type"]


def _since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _failed(error: PolicyRuntimeError, started: float) -> Outcome:
    output = getattr(error, "output", None)
    return Outcome(
        ok=False, error=error.to_dict(), duration_ms=_since(started),
        output=output if isinstance(output, dict) else {},
    )


def _with_output(error: PolicyRuntimeError, answer: CallAnswer) -> PolicyRuntimeError:
    """``error``, carrying what the policy printed and logged before it was refused."""
    error.output = answer.output  # type: ignore[attr-defined]
    return error


def _same(first: Any, second: Any) -> bool:
    """JSON equality (``1`` is not ``true``)."""
    try:
        return encode_state(first) == encode_state(second)
    except ValueError:  # NaN or infinity: not storable anyway
        return False


def _kept_state(answer: CallAnswer, slot: ContextSlot, supplied: dict) -> dict:
    """The context to store: the dict as the policy left it, without the keys the
    runtime sets itself. A key the caller supplied for this decision is stored only when
    the policy changed its value: callers cannot write a policy's context themselves."""
    state = answer.context if isinstance(answer.context, dict) else {}
    kept = {}
    for key, value in state.items():
        if key in _RESERVED_CONTEXT_KEYS:
            continue
        if key in supplied and _same(value, supplied[key]):
            if key in slot.state:
                kept[key] = slot.state[key]
            continue
        kept[key] = value
    return kept


def _conflict_error(slot: ContextSlot) -> PolicyError:
    where = f" on cluster {slot.cluster_id!r}" if slot.cluster_id else ""
    return PolicyError(
        f"the context of {slot.policy_rule_uri}{where} was changed by other decisions "
        f"{CONTEXT_ATTEMPTS} times while this one ran; it was not stored. Retry the decision"
    )


_POLICY_CLASS = "AIOSv1PolicyRule"


def _rebinds(tree: ast.AST) -> bool:
    """Whether anything but one plain ``class AIOSv1PolicyRule`` could decide which
    ``eval`` runs: another binding of the class name, a store to an ``eval`` attribute,
    or ``setattr``."""
    classes = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == _POLICY_CLASS:
            classes += 1
        elif isinstance(node, ast.Name) and node.id in (_POLICY_CLASS, "setattr"):
            if node.id == "setattr" or not isinstance(node.ctx, ast.Load):
                return True
        elif isinstance(node, ast.alias) and (node.asname or node.name) == _POLICY_CLASS:
            return True
        elif isinstance(node, ast.Attribute) and node.attr == "eval":
            if not isinstance(node.ctx, ast.Load):
                return True
    return classes != 1


@functools.lru_cache(maxsize=256)
def uses_context(source: str) -> bool:
    """Whether the policy's ``eval`` can read or change its ``context``.

    False only for the plain case: one top-level ``class AIOSv1PolicyRule`` without
    bases, decorators or keywords, defining ``eval`` once (undecorated, nothing else
    bound to that name), nothing rebinding either, and an ``eval`` body that never names
    its context parameter. Such a policy's decisions never touch the context store.
    """
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return True
    if _rebinds(tree):
        return True
    cls = next(
        (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == _POLICY_CLASS), None
    )
    if cls is None or cls.bases or cls.keywords or cls.decorator_list:
        return True
    bound = [
        item for item in cls.body
        if (isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and item.name == "eval")
        or (not isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and any(isinstance(n, ast.Name) and n.id == "eval" for n in ast.walk(item)))
    ]
    if len(bound) != 1 or not isinstance(bound[0], ast.FunctionDef) or bound[0].decorator_list:
        return True
    method = bound[0]
    args = method.args
    positional = [*args.posonlyargs, *args.args]
    if args.vararg or args.kwarg or len(positional) < 4:
        return True
    name = positional[3].arg
    return any(
        isinstance(n, ast.Name) and n.id == name
        for statement in method.body
        for n in ast.walk(statement)
    )


def _backoff(attempt: int) -> float:
    return random.uniform(0, min(0.05, 0.002 * (attempt + 1)))  # noqa: S311 - jitter


# Schema validation is CPU-bound (bounded by LimitsConfig.schema_timeout_seconds); the
# service runs it in these threads so that the event loop keeps answering meanwhile.
_SCHEMA_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="schema")


def _has_schemas(policy: dict) -> bool:
    return any(policy.get(name) for name in schemas.SCHEMA_FIELDS)


# Validation runs on the event loop itself, without a thread, when it is certainly short:
# the policy's schemas are linear (schemas.is_linear) and the bytes of the value times the
# bytes of the schemas stay under this bound. Linear validation visits each part of the
# value against each keyword of the schema at most once, so the bound caps the work at a
# few hundred thousand steps (milliseconds); handing small work to a thread and back
# costs more than doing it.
INLINE_VALIDATION_WORK = 1 << 22
_SCHEMA_COSTS: dict[int, tuple[dict, tuple[int, int] | None]] = {}
_SCHEMA_COSTS_KEPT = 512


def _json_bytes(value: Any) -> int | None:
    try:
        return len(json.dumps(value))
    except (TypeError, ValueError, RecursionError):
        return None


def _schema_cost(policy: dict) -> tuple[int, int] | None:
    """(bytes of the policy's schemas, bytes of its default settings and parameters), or
    None when a schema is not linear; remembered per policy document (the service keeps
    one object per cached policy, and the entry holds it, so its id stays its own)."""
    entry = _SCHEMA_COSTS.get(id(policy))
    if entry is not None and entry[0] is policy:
        return entry[1]
    cost = None
    declared = [policy.get(name) for name in schemas.SCHEMA_FIELDS]
    if all(schemas.is_linear(schema) for schema in declared):
        schema_bytes = _json_bytes(declared)
        default_bytes = _json_bytes(
            [policy.get("policy_settings"), policy.get("policy_parameters")]
        )
        if schema_bytes is not None and default_bytes is not None:
            cost = (schema_bytes, default_bytes)
    if len(_SCHEMA_COSTS) >= _SCHEMA_COSTS_KEPT:
        _SCHEMA_COSTS.clear()
    _SCHEMA_COSTS[id(policy)] = (policy, cost)
    return cost


def _inline(policy: dict, size: int | None) -> bool:
    """Whether validating a value of ``size`` bytes (None: unknown) for ``policy`` is
    short enough for the event loop: no schema at all, or the bound above."""
    if not _has_schemas(policy):
        return True
    if size is None:
        return False
    cost = _schema_cost(policy)
    if cost is None:
        return False
    schema_bytes, default_bytes = cost
    return (size + default_bytes) * schema_bytes <= INLINE_VALIDATION_WORK


def _positive(settings: dict, key: str, default: float) -> float:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidInput(f"settings.{key} must be a positive number, got {value!r}")
    return float(value)


class PolicyEvaluator:
    """Evaluates stored policy documents (dicts with ``code`` and upstream fields)."""

    def __init__(
        self, pool: WorkerPool, limits: LimitsConfig, contexts: ContextStore | None = None
    ) -> None:
        self.pool = pool
        self.limits = limits
        # With a store, each policy's ``context`` persists between decisions (per
        # policy URI and cluster id); without one, every decision starts from {}.
        self.contexts = contexts
        # Decisions of this process on one context wait for each other: fewer conflicts.
        self._context_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

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

    def _checked(self, policy: dict, answer: CallAnswer | Any, started: float) -> Outcome:
        """A successful result, once it matches the policy's output schema."""
        if not isinstance(answer, CallAnswer):
            answer = CallAnswer(answer)
        try:
            self._validate(
                policy.get("policy_output_schema"), answer.result, "result", output=True
            )
        except PolicyRuntimeError as exc:
            raise _with_output(exc, answer) from None
        return Outcome(
            ok=True, result=answer.result, duration_ms=_since(started), output=answer.output
        )

    async def _checked_async(self, policy: dict, answer: CallAnswer, started: float) -> Outcome:
        if _inline(policy, answer.size):
            return self._checked(policy, answer, started)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            _SCHEMA_THREADS, self._checked, policy, answer, started
        )

    # -- persisted context ------------------------------------------------------------
    def _persists(self, policy: dict) -> bool:
        return (
            self.contexts is not None
            and bool(policy.get("policy_rule_uri"))
            and uses_context(policy["code"])
        )

    @staticmethod
    def _on_slot(call: PolicyCall, slot: ContextSlot) -> PolicyCall:
        # The stored context, with what the caller sent for this decision laid over it.
        return dataclasses.replace(
            call, context={**slot.state, **call.context}, keep_context=True
        )

    def _store(self, slot: ContextSlot, answer: CallAnswer, supplied: dict) -> None:
        assert self.contexts is not None
        try:
            self.contexts.store(slot, _kept_state(answer, slot, supplied))
        except PolicyRuntimeError as exc:  # over the size limit
            raise _with_output(exc, answer) from None

    def _with_context(
        self, policy: dict, call: PolicyCall, cluster_id: str | None, started: float
    ) -> Outcome:
        """One decision on the stored context, stored again (compare-and-set) when it
        succeeds; run again on the newer context when another decision stored first."""
        assert self.contexts is not None
        uri = policy["policy_rule_uri"]
        for attempt in range(CONTEXT_ATTEMPTS):
            slot = self.contexts.load(uri, cluster_id)
            answer = self.pool.call_answer(self._on_slot(call, slot))
            outcome = self._checked(policy, answer, started)
            try:
                self._store(slot, answer, call.context)
            except ContextConflict:
                time.sleep(_backoff(attempt))
                continue
            return outcome
        raise _conflict_error(slot)

    async def _with_context_async(
        self, policy: dict, call: PolicyCall, cluster_id: str | None, started: float
    ) -> Outcome:
        """_with_context() for the event loop; the database is asked from a thread."""
        assert self.contexts is not None
        contexts = self.contexts
        uri = policy["policy_rule_uri"]
        key = f"{uri}\x00{cluster_id or ''}"
        lock = self._context_locks.get(key)
        if lock is None:
            lock = self._context_locks[key] = asyncio.Lock()
        async with lock:
            for attempt in range(CONTEXT_ATTEMPTS):
                slot = await asyncio.to_thread(contexts.load, uri, cluster_id)
                answer = await self.pool.acall_answer(self._on_slot(call, slot))
                outcome = await self._checked_async(policy, answer, started)
                try:
                    await asyncio.to_thread(self._store, slot, answer, call.context)
                except ContextConflict:
                    await asyncio.sleep(_backoff(attempt))
                    continue
                return outcome
        raise _conflict_error(slot)

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
        cluster_id: str | None = None,
    ) -> Outcome:
        """Run ``eval``; failures come back as an Outcome with ``ok=False``, never raised.

        With a context store, the policy's ``context`` is the one stored for its URI and
        ``cluster_id``, and is stored again when the decision succeeds.
        """
        started = time.perf_counter()
        try:
            call = self._eval_request(policy, input_data, parameters, settings, context)
            if cluster_id:
                call = dataclasses.replace(call, scope=cluster_id)
            if self._persists(policy):
                return self._with_context(policy, call, cluster_id, started)
            return self._checked(policy, self.pool.call_answer(call), started)
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
        cluster_id: str | None = None,
        request_bytes: int | None = None,
    ) -> Outcome:
        """evaluate() for an event loop (the HTTP service): schema validation, when the
        policy declares schemas, runs in a worker thread rather than on the loop, unless
        the request (``request_bytes``, the size of the body that carried the input,
        parameters, settings and context) and the answer are small and the schemas linear."""
        started = time.perf_counter()
        try:
            if _inline(policy, request_bytes):
                call = self._eval_request(policy, input_data, parameters, settings, context)
            else:
                loop = asyncio.get_running_loop()
                call = await loop.run_in_executor(
                    _SCHEMA_THREADS, self._eval_request, policy, input_data, parameters,
                    settings, context,
                )
            if cluster_id:
                call = dataclasses.replace(call, scope=cluster_id)
            if self._persists(policy):
                return await self._with_context_async(policy, call, cluster_id, started)
            answer = await self.pool.acall_answer(call)
            return await self._checked_async(policy, answer, started)
        except PolicyRuntimeError as exc:
            return _failed(exc, started)

    def manage(
        self, policy: dict, action: str, data: Any, *, parameters: dict | None = None
    ) -> Outcome:
        """Run the policy's ``management(action, data)`` method."""
        started = time.perf_counter()
        try:
            merged_settings, merged_parameters = self._prepare(policy, parameters, None)
            answer = self.pool.call_answer(
                self._request(
                    policy, "manage", merged_settings, merged_parameters, action=action,
                    data=data,
                )
            )
        except PolicyRuntimeError as exc:
            return _failed(exc, started)
        return Outcome(
            ok=True, result=answer.result, duration_ms=_since(started), output=answer.output
        )

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
