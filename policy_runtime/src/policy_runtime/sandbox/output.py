"""What leaves the sandbox: a policy's result as plain JSON values, errors as safe text.

A policy's result is copied into exact ``dict``/``list``/``str``/``int``/``float``/
``bool``/``None`` values inside the policy's own evaluation, reading subclasses through
the builtin types' own methods (``dict.items(d)``, never ``d.items()``): encoding it
afterwards runs no policy code and cannot fail half-way through a reply. Results nested
deeper than ``MAX_RESULT_DEPTH`` are refused, since the receiving side decodes JSON
recursively.
"""

from __future__ import annotations

import json
import math
from typing import Any

from policy_runtime.errors import InvalidOutput

MAX_RESULT_DEPTH = 64
# Error messages are for people: longer ones are cut, so a reply always fits a frame.
MAX_MESSAGE_CHARS = 4096


class _NotJson(Exception):
    """A value that is not JSON, and the key path (innermost last) to it."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path: list[str] = []


def _step(key: Any) -> str:
    """One step of a key path as Python reads it: ``["name"]`` or ``[2]``."""
    if type(key) is str:
        text = key if len(key) <= 80 else key[:77] + "..."
        return "[" + json.dumps(text, ensure_ascii=False) + "]"
    if type(key) in (int, bool, float) or key is None:
        return f"[{key!r}]"
    return f"[<{type(key).__name__}>]"


def _key(key: Any) -> Any:
    # The key types json.dumps accepts, as exact values.
    if key is None or key is True or key is False:
        return key
    if isinstance(key, str):
        return str.__str__(key)
    if isinstance(key, int):
        return int.__int__(key)
    if isinstance(key, float):
        return _float(float.__float__(key))
    raise _NotJson(
        f"a key of type {type(key).__name__} is not JSON (keys must be str, int, float, "
        "bool or None)"
    )


def _float(value: float) -> float:
    if not math.isfinite(value):
        raise _NotJson(f"{value!r} is not a JSON number")
    return value


def _plain(value: Any, depth: int) -> Any:
    cls = type(value)
    if cls is str or cls is int or cls is bool or value is None:
        return value
    if cls is float:
        return _float(value)
    if depth >= MAX_RESULT_DEPTH:
        raise InvalidOutput(
            f"the policy's result is nested deeper than {MAX_RESULT_DEPTH} levels"
        )
    depth += 1
    if isinstance(value, dict):
        plain = {}
        for k, v in dict.items(value):
            try:
                plain[_key(k)] = _plain(v, depth)
            except _NotJson as exc:
                exc.path.append(_step(k))
                raise
        return plain
    if isinstance(value, (list, tuple)):
        items = list.__iter__(value) if isinstance(value, list) else tuple.__iter__(value)
        copied = []
        for index, v in enumerate(items):
            try:
                copied.append(_plain(v, depth))
            except _NotJson as exc:
                exc.path.append(f"[{index}]")
                raise
        return copied
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):  # bool cannot be subclassed; kept for clarity
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return _float(float.__float__(value))
    raise _NotJson(f"{type(value).__name__} is not JSON")


def plain_copy(value: Any, name: str = "result") -> Any:
    """``value`` as a fresh copy in exact JSON types; InvalidOutput naming the key path
    to what is not JSON (e.g. ``result["details"][2]["when"]: datetime is not JSON``) or
    when it is nested too deep; ``name`` is the path's root.

    What a call returns is always copied: a finalizer of the policy's that runs later in
    the call (when its garbage is collected) can still change the objects the policy
    returned, but never the copy that is encoded. The copy runs no policy code: it reads
    containers through the base types' own methods.
    """
    try:
        return _plain(value, 0)
    except _NotJson as exc:
        path = name + "".join(reversed(exc.path))
        raise InvalidOutput(f"the policy's {name} is not JSON: {path}: {exc.problem}") from None


def safe_text(text: str) -> str:
    """``text`` encodable as UTF-8 (lone surrogates escaped) and at most MAX_MESSAGE_CHARS."""
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[:MAX_MESSAGE_CHARS] + " [...]"
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode()
    return text
