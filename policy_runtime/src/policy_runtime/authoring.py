"""What a policy author's tools check before a policy runs anywhere.

``aios-policy check`` runs every static check publishing runs (schemas, default
parameters and settings against their schemas, compile + contract in the sandbox) and,
on top, a lint of the source for what the sandbox only refuses when the line runs: an
import of a module policies may not use, ``str.format``, a builtin that policies do not
have (``type``, ``object``, ...), ``d[k] += 1``. ``eval`` and ``test`` check the result
contract of the policy's type the way the governing service does.
"""

from __future__ import annotations

import ast
import builtins
import json
from typing import Any

from policy_runtime import schemas
from policy_runtime.errors import CompileError, InvalidOutput
from policy_runtime.governance.actions import (
    PRECHECK,
    RESULT_KEYS,
    STABILITY_CHECKER,
    answers,
    declared_action,
    kind_of,
)

# type -> (key, what the governing service requires)
RESULT_CONTRACTS = {
    PRECHECK: (RESULT_KEYS[PRECHECK], "a pre-check must return {'allowed': bool, "
               "'input_data': ..., 'reason'?: str}; the service denies (fails closed) on "
               "anything else"),
    STABILITY_CHECKER: (RESULT_KEYS[STABILITY_CHECKER], "a stability checker must return "
                        "{'is_stable': bool, 'stability_check_data': {...}}; the service "
                        "records anything else as unstable"),
}
_TYPE_ALIASES = {
    "precheck": "precheck", "pre-check": "precheck", "pre_check": "precheck",
    "stability_checker": "stability_checker", "stability-checker": "stability_checker",
    "stability": "stability_checker",
}

# names RestrictedPython rewrites itself
_TRANSFORMED = frozenset({"print", "printed"})

_FIXES = {
    "type": "use isinstance(value, dict) etc.",
    "object": "define a plain class or use a dict",
    "vars": "read attributes directly",
    "globals": "pass values as arguments",
    "locals": "pass values as arguments",
    "open": "policies cannot read files; pass the data as input_data or parameters",
    "exec": "policies cannot run code they build",
    "eval": "policies cannot run code they build",
    "compile": "policies cannot run code they build",
    "input": "policies read input_data",
    "super": "call the base class method explicitly, or avoid inheritance",
}


def policy_kind(document: dict) -> str | None:
    """``precheck``, ``stability_checker`` or None: the policy's ``type``, else the one
    type among its tags, else how the service runs a policy for the action it declares
    (``metadata.action`` or an action tag: a governed action is a pre-check)."""
    kind = _TYPE_ALIASES.get(str(document.get("type") or "").strip().lower())
    if kind:
        return kind
    tags = document.get("tags") or []
    if isinstance(tags, str):
        tags = tags.split(",")
    found = ({_TYPE_ALIASES.get(str(tag).strip().lower()) for tag in tags}
             if isinstance(tags, list) else set()) - {None}
    if found:
        return found.pop() if len(found) == 1 else None
    return kind_of(declared_action(document))


def check_result_contract(document: dict, result: Any) -> None:
    """Raise InvalidOutput unless ``result`` is what the service needs from this type."""
    kind = policy_kind(document)
    if kind is None:
        return
    key, contract = RESULT_CONTRACTS[kind]
    if answers(kind, result):
        return
    if isinstance(result, dict):
        got = f"result.{key} is {json.dumps(result.get(key))}" if key in result else (
            f"result has no {key!r} (its keys: {', '.join(sorted(map(str, result))) or 'none'})"
        )
    else:
        got = f"result is {type(result).__name__}"
    raise InvalidOutput(f"{got}; {contract}")


def _sandbox_names() -> tuple[frozenset[str], frozenset[str]]:
    """(modules policies may import, builtins policies have)."""
    from policy_runtime.sandbox.builtins import POLICY_BUILTINS
    from policy_runtime.sandbox.modules import IMPORTABLE

    return IMPORTABLE, frozenset(POLICY_BUILTINS)


def _bound_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


def lint_source(source: str) -> None:
    """Raise CompileError for the first construct the sandbox refuses only when it runs."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return  # the compiler reports it, with its own message
    allowed_modules, policy_builtins = _sandbox_names()
    bound = _bound_names(tree)
    missing = (set(dir(builtins)) - policy_builtins - _TRANSFORMED) - bound
    problems: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if isinstance(node, ast.ImportFrom) and node.level:
                problems.append((line, "relative imports are not allowed in policies"))
                continue
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [
                alias.name for alias in node.names
            ]
            for name in names:
                if name.split(".")[0] not in allowed_modules or "." in name:
                    problems.append((line, f"import of {name!r} is not allowed; policies may "
                                           f"import: {', '.join(sorted(allowed_modules))}"))
        elif isinstance(node, ast.Attribute) and node.attr in ("format", "format_map"):
            problems.append((line, f".{node.attr}() is not allowed in policies; use an "
                                   "f-string (f\"{value}\") or % formatting instead"))
        elif (isinstance(node, ast.AugAssign)
              and isinstance(node.target, (ast.Subscript, ast.Attribute))):
            target = ast.unparse(node.target)
            op = ast.unparse(ast.BinOp(ast.Name("a"), node.op, ast.Name("b")))[2:-2]
            problems.append((line, f"{target} {op}= ... is not allowed in policies; write "
                                   f"{target} = {target} {op} ..."))
        elif (isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)
              and node.id in missing and not node.id.startswith("_")):
            fix = _FIXES.get(node.id, "policies only have the safe builtins")
            problems.append((line, f"{node.id} is not available in policies; {fix}"))
    if problems:
        line, message = min(problems)
        raise CompileError(f"Line {line}: {message}", line=line)


_EXPLAINED = (
    ("Augmented assignment of object items and slices is not allowed",
     "Write d[k] = d[k] + 1 instead of d[k] += 1."),
    ("Augmented assignment of attributes is not allowed",
     "Write self.x = self.x + 1 instead of self.x += 1."),
    ('access to "format" is not allowed', 'Use an f-string (f"{value}") or % formatting.'),
    ('access to "format_map" is not allowed', 'Use an f-string (f"{value}") or % formatting.'),
    ("name 'type' is not defined", "Use isinstance(value, dict) etc."),
)


def explain_error(message: str) -> str:
    """A compile or sandbox message, with the fix named where it does not say it."""
    for needle, fix in _EXPLAINED:
        if needle in message and fix not in message:
            return f"{message}{' ' if message.endswith('.') else '. '}{fix}"
    return message


def static_check(document: dict) -> None:
    """The checks publishing runs outside the sandbox, plus the source lint; raises."""
    schemas.check_schemas(document)
    schemas.check_defaults(document)
    code = document.get("code")
    if isinstance(code, str):
        lint_source(code)



# In a test case's "expected", this string matches any value (the key must be present).
ANY = "<any>"


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    return text if len(text) <= 120 else f"{text[:117]}..."


def differences(expected: Any, actual: Any, *, partial: bool, path: str = "result") -> list[str]:
    """Where ``actual`` differs from ``expected``, one line per key path.

    ``partial``: a dict matches when it has every expected key (others are ignored);
    lists always match element by element. ``"<any>"`` matches any value.
    """
    if expected == ANY:
        return []
    if isinstance(expected, dict) and isinstance(actual, dict):
        found = []
        for key, value in expected.items():
            if key not in actual:
                found.append(f"{path}.{key}: missing (expected {_short(value)})")
            else:
                found.extend(differences(value, actual[key], partial=partial,
                                         path=f"{path}.{key}"))
        if not partial:
            found.extend(f"{path}.{key}: not expected (got {_short(actual[key])})"
                         for key in actual if key not in expected)
        return found
    if isinstance(expected, list) and isinstance(actual, list):
        found = []
        for index, (want, got) in enumerate(zip(expected, actual, strict=False)):
            found.extend(differences(want, got, partial=partial, path=f"{path}[{index}]"))
        if len(expected) != len(actual):
            found.append(f"{path}: expected {len(expected)} items, got {len(actual)}")
        return found
    # JSON equality: 1 equals 1.0, but true is not 1
    same = expected == actual and isinstance(expected, bool) == isinstance(actual, bool)
    return [] if same else [f"{path}: expected {_short(expected)}, got {_short(actual)}"]
