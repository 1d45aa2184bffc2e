"""Run compiled policy code in a restricted namespace and translate what goes wrong.

This is the in-process half of evaluation; ``worker.py`` runs it inside a process with
hard limits. Every exception a policy can cause leaves here as a typed error.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

from policy_runtime.errors import (
    MemoryLimit,
    PolicyError,
    PolicyRuntimeError,
    SandboxViolation,
    Timeout,
)
from policy_runtime.sandbox.builtins import POLICY_BUILTINS, PRINT_GUARD
from policy_runtime.sandbox.compiler import POLICY_FILENAME, PolicyContract, check_contract
from policy_runtime.sandbox.guards import GUARDS, GuardViolation, violations


class CpuTimeExceeded(BaseException):
    """Raised in the worker when the CPU-time limit signal arrives mid-policy."""


def new_namespace() -> dict[str, Any]:
    """The globals of one policy module: restricted builtins and the guards, nothing else."""
    return {
        "__builtins__": POLICY_BUILTINS,
        "__name__": "policy",
        "_print_": PRINT_GUARD,
        **GUARDS,
    }


def _policy_line(tb: types.TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == POLICY_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _at(line: int | None) -> str:
    return f" (line {line})" if line else ""


def _typed(exc: BaseException) -> PolicyRuntimeError:
    """The typed error a failure inside policy code is reported as."""
    if isinstance(exc, PolicyRuntimeError):
        return exc
    line = _policy_line(exc.__traceback__)
    if isinstance(exc, GuardViolation):
        return SandboxViolation(f"{exc}{_at(line)}", line=line)
    if isinstance(exc, CpuTimeExceeded):
        return Timeout("the policy used more CPU time than its limit allows")
    if isinstance(exc, MemoryError):
        return MemoryLimit("the policy needed more memory than its limit allows")
    if isinstance(exc, RecursionError):
        return PolicyError(f"RecursionError: maximum recursion depth exceeded{_at(line)}")
    return PolicyError(f"{type(exc).__name__}: {exc}{_at(line)}", line=line)


def run_guarded(func: Callable[..., Any], *args: Any) -> Any:
    """Call into policy code; every failure becomes a typed PolicyRuntimeError.

    A guard violation wins over anything else the call did: a policy that swallowed one
    with a bare ``except:`` still fails with SandboxViolation.
    """
    # The guards' violation list is read directly: this runs on every decision.
    if violations:
        violations.clear()
    error: PolicyRuntimeError | None = None
    try:
        result = func(*args)
    except BaseException as exc:
        error = _typed(exc)
    if violations:
        error = _typed(violations.pop())
    if error is not None:
        raise error from None
    return result


def load_policy(code: types.CodeType) -> PolicyContract:
    """Execute the policy module's top level and check its contract."""
    namespace = new_namespace()
    run_guarded(exec, code, namespace)
    return check_contract(namespace)


def evaluate(
    policy: PolicyContract,
    *,
    rule_id: str,
    settings: dict,
    parameters: dict,
    input_data: Any,
    context: dict,
) -> Any:
    """Instantiate the rule and call ``eval`` once; a fresh instance per decision.

    The same protocol as run_guarded(), written out because it is the hot path.
    """
    if violations:
        violations.clear()
    error: PolicyRuntimeError | None = None
    try:
        instance = policy.policy_class(rule_id, settings, parameters)
        result = instance.eval(parameters, input_data, context)
    except BaseException as exc:
        error = _typed(exc)
    if violations:
        error = _typed(violations.pop())
    if error is not None:
        raise error from None
    return result


def manage(
    policy: PolicyContract,
    *,
    rule_id: str,
    settings: dict,
    parameters: dict,
    action: str,
    data: Any,
) -> Any:
    """Call the policy's optional ``management(action, data)`` method."""
    if not policy.has_management:
        raise PolicyError("the policy does not define management(action, data)")
    instance = run_guarded(policy.policy_class, rule_id, settings, parameters)
    return run_guarded(instance.management, action, data)
