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
from policy_runtime.sandbox.isolation import check_shared_state, end_of_call
from policy_runtime.sandbox.output import plain_copy


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


def _message(exc: BaseException) -> str:
    # str() of a policy's own exception class runs policy code, which may fail too.
    try:
        return str(exc)
    except BaseException:  # anything the policy raised
        return "(the exception's message could not be read)"


def _typed(exc: BaseException) -> PolicyRuntimeError:
    """The typed error a failure inside policy code is reported as."""
    if isinstance(exc, PolicyRuntimeError):
        return exc
    line = _policy_line(exc.__traceback__)
    if isinstance(exc, GuardViolation):
        return SandboxViolation(f"{_message(exc)}{_at(line)}", line=line)
    if isinstance(exc, CpuTimeExceeded):
        return Timeout("the policy used more CPU time than its limit allows")
    if isinstance(exc, MemoryError):
        return MemoryLimit("the policy needed more memory than its limit allows")
    if isinstance(exc, RecursionError):
        return PolicyError(f"RecursionError: maximum recursion depth exceeded{_at(line)}")
    return PolicyError(f"{type(exc).__name__}: {_message(exc)}{_at(line)}", line=line)


def finish_call(error: PolicyRuntimeError | None) -> PolicyRuntimeError | None:
    """End a call into policy code, inside its accounting; the error it ends with.

    Frees what the call left behind (its finalizers run now, as part of this call),
    then checks shared state and the guards' violations: a change to state other
    policies share, then a guard violation, win over any other outcome.
    """
    try:
        end_of_call()
    except BaseException as exc:  # e.g. the CPU limit inside a finalizer
        error = error or _typed(exc)
    change = check_shared_state()
    if change is not None:
        return SandboxViolation(f"{change}: policies must not change state they share")
    if violations:
        return _typed(violations.pop())
    return error


def run_guarded(func: Callable[..., Any], *args: Any) -> Any:
    """Call into policy code; every failure becomes a typed PolicyRuntimeError.

    A guard violation wins over anything else the call did: a policy that swallowed one
    with a bare ``except:`` still fails with SandboxViolation.
    """
    # The guards' violation list is read directly: this runs on every decision.
    if violations:
        violations.clear()
    error: PolicyRuntimeError | None = None
    result = None
    try:
        result = func(*args)
    except BaseException as exc:
        error = _typed(exc)
    error = finish_call(error)
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
    return evaluate_keeping_context(
        policy, rule_id=rule_id, settings=settings, parameters=parameters,
        input_data=input_data, context=context, keep_context=False,
    )[0]


def evaluate_keeping_context(
    policy: PolicyContract,
    *,
    rule_id: str,
    settings: dict,
    parameters: dict,
    input_data: Any,
    context: dict,
    keep_context: bool,
) -> tuple[Any, Any]:
    """evaluate(), and with ``keep_context`` also ``context`` as the policy left it, as
    plain JSON (InvalidOutput naming the key path when it is not JSON): the state the
    runtime persists for the policy's next decision."""
    if violations:
        violations.clear()
    error: PolicyRuntimeError | None = None
    instance = result = kept = None
    try:
        instance = policy.policy_class(rule_id, settings, parameters)
        result = plain_copy(instance.eval(parameters, input_data, context))
        if keep_context:
            kept = plain_copy(context, "context")
    except BaseException as exc:
        error = _typed(exc)
    instance = None  # freed now, inside this call, with everything else it holds
    error = finish_call(error)
    if error is not None:
        raise error from None
    return result, kept


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
    return run_guarded(
        _management, policy.policy_class, rule_id, settings, parameters, action, data
    )


def _management(
    policy_class: type, rule_id: str, settings: dict, parameters: dict, action: str, data: Any
) -> Any:
    # One call, so that the instance is freed inside it.
    return plain_copy(policy_class(rule_id, settings, parameters).management(action, data))
