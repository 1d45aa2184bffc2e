"""Compile policy source with RestrictedPython and check the AIOSv1PolicyRule contract."""

from __future__ import annotations

import ast
import inspect
import re
import types
from dataclasses import dataclass

from RestrictedPython import RestrictingNodeTransformer, compile_restricted_exec

from policy_runtime.errors import CompileError, InvalidPolicy
from policy_runtime.sandbox.guards import is_policy_class

POLICY_FILENAME = "<policy>"
POLICY_CLASS = "AIOSv1PolicyRule"

_LINE = re.compile(r"^Line (\d+)")

# (method, example arguments after self, how the contract describes them)
_CONTRACT: tuple[tuple[str, tuple, str], ...] = (
    ("__init__", ("rule-id", {}, {}), "(self, rule_id, settings, parameters)"),
    ("eval", ({}, {}, {}), "(self, parameters, input_data, context)"),
)
_OPTIONAL_MANAGEMENT = ("management", ("action", {}), "(self, action, data)")


class PolicyTransformer(RestrictingNodeTransformer):
    """RestrictedPython's transformer, plus annotated assignments (``x: list[int] = []``).

    RestrictedPython rejects every node type it has not reviewed, AnnAssign included. An
    annotated assignment has a single target (a name, attribute or subscript, never a
    tuple) and otherwise is a plain assignment, so its parts go through the same checks:
    the target's name rules and ``_write_``, the guards in the annotation and the value.
    (Policies are compiled with postponed annotations, inherited from RestrictedPython's
    compile module, so the annotation itself is kept as a string and never runs.)
    """

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        return self.node_contents_visit(node)

    def visit_Name(self, node: ast.Name) -> ast.AST:
        # Reading ``__name__`` (``logging.getLogger(__name__)``, common in upstream
        # policies) gives the module's name, a plain str; binding or deleting it is
        # still refused.
        if node.id == "__name__" and isinstance(node.ctx, ast.Load):
            return node
        return super().visit_Name(node)


def compile_policy(source: str) -> types.CodeType:
    """Compile restricted source once; raise CompileError naming the line on failure."""
    if not isinstance(source, str) or not source.strip():
        raise CompileError("the policy code is empty")
    try:
        result = compile_restricted_exec(
            source, filename=POLICY_FILENAME, policy=PolicyTransformer
        )
    except (RecursionError, MemoryError):
        raise CompileError("the policy code is nested too deeply to compile") from None
    except SyntaxError as exc:
        # RestrictedPython reports parse errors itself, but errors that only the final
        # compile() finds ('return' or 'break' outside their block, a repeated argument
        # name) come through as exceptions.
        raise CompileError(f"Line {exc.lineno}: SyntaxError: {exc.msg}", line=exc.lineno) from None
    except (ValueError, TypeError) as exc:  # e.g. NUL bytes in the source
        raise CompileError(f"the policy code cannot be compiled: {exc}") from None
    if result.errors:
        match = _LINE.match(result.errors[0])
        line = int(match.group(1)) if match else None
        raise CompileError("; ".join(result.errors), line=line)
    assert result.code is not None
    return result.code


@dataclass(frozen=True)
class PolicyContract:
    """What the contract check found in a policy namespace."""

    policy_class: type
    has_management: bool


def _accepts(func: object, args: tuple) -> str | None:
    """None when ``func(obj, *args)`` binds, else the reason it does not."""
    if not callable(func):
        return "it is not a method"
    try:
        inspect.signature(func).bind(object(), *args)
    except TypeError as exc:
        return str(exc)
    except ValueError:
        return "its signature cannot be read"
    return None


def _contract_error(name: str, shape: str, problem: str) -> InvalidPolicy:
    return InvalidPolicy(f"{POLICY_CLASS}.{name} must be defined as {name}{shape}: {problem}")


def check_contract(namespace: dict) -> PolicyContract:
    """Verify the namespace defines AIOSv1PolicyRule with the expected methods."""
    cls = namespace.get(POLICY_CLASS)
    if not isinstance(cls, type) or not is_policy_class(cls):
        defined = sorted(
            k for k, v in namespace.items() if isinstance(v, type) and is_policy_class(v)
        )
        found = ", ".join(defined) if defined else "no class"
        raise InvalidPolicy(f"the policy must define class {POLICY_CLASS}; it defines {found}")
    for name, args, shape in _CONTRACT:
        method = getattr(cls, name, None)
        if method in (None, object.__init__):
            problem = "it is not defined"
        else:
            problem = _accepts(method, args)
        if problem:
            raise _contract_error(name, shape, problem)
    name, args, shape = _OPTIONAL_MANAGEMENT
    management = getattr(cls, name, None)
    if management is not None:
        problem = _accepts(management, args)
        if problem:
            raise _contract_error(name, shape, problem)
    return PolicyContract(policy_class=cls, has_management=management is not None)
