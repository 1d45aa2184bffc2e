"""The builtins a policy sees.

Start from RestrictedPython's ``safe_builtins``; put back, as wrappers that iterate
through the ``_getiter_`` guard, the iteration helpers RestrictedPython 9.0 dropped
(``sorted``, ``zip``, ``tuple``, ``reversed`` ...); replace ``setattr``/``delattr``
with our guarded versions; add guarded ``getattr``/``hasattr`` and ``__import__``.
Nothing here gives access to code objects, frames, namespaces, files or the interpreter:
no ``open``, ``exec``, ``eval``, ``compile``, ``globals``, ``locals``, ``vars``, ``dir``,
``type``, ``object``, ``super``, ``input``, ``breakpoint``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from RestrictedPython.Guards import safe_builtins
from RestrictedPython.PrintCollector import PrintCollector

from policy_runtime.sandbox.guards import (
    guarded_delattr,
    guarded_getattr,
    guarded_getiter,
    guarded_hasattr,
    guarded_setattr,
)
from policy_runtime.sandbox.modules import guarded_import


def _iterating(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a builtin that consumes one iterable so that iteration goes through the guard."""

    def wrapper(iterable: Iterable[Any] = (), *args: Any, **kwargs: Any) -> Any:
        return func(guarded_getiter(iterable), *args, **kwargs)

    wrapper.__name__ = func.__name__
    return wrapper


def _guarded_zip(*iterables: Iterable[Any], strict: bool = False) -> Any:
    return zip(*(guarded_getiter(it) for it in iterables), strict=strict)


def _guarded_map(func: Callable[..., Any], *iterables: Iterable[Any]) -> Any:
    return map(func, *(guarded_getiter(it) for it in iterables))


def _guarded_filter(func: Callable[..., Any] | None, iterable: Iterable[Any]) -> Any:
    return filter(func, guarded_getiter(iterable))


def _guarded_enumerate(iterable: Iterable[Any], start: int = 0) -> Any:
    return enumerate(guarded_getiter(iterable), start)


def _guarded_minmax(func: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 1:
            return func(guarded_getiter(args[0]), **kwargs)
        return func(*args, **kwargs)

    wrapper.__name__ = func.__name__
    return wrapper


def _guarded_reversed(seq: Any) -> Any:
    return reversed(list(guarded_getiter(seq)))


# setattr/delattr are replaced below; ``_getattr_`` is RestrictedPython's laxer guard
# (ours lives in the namespace); the BaseException family that is not an Exception
# would let a policy stop its worker (SystemExit) or catch the guards' own signals.
_REMOVED = (
    "setattr",
    "delattr",
    "_getattr_",
    "BaseException",
    "GeneratorExit",
    "KeyboardInterrupt",
    "SystemExit",
)

_ADDED: dict[str, Any] = {
    "sorted": _iterating(sorted),
    "tuple": _iterating(tuple),
    "list": _iterating(list),
    "set": _iterating(set),
    "frozenset": _iterating(frozenset),
    "all": _iterating(all),
    "any": _iterating(any),
    "sum": _iterating(sum),
    "zip": _guarded_zip,
    "map": _guarded_map,
    "filter": _guarded_filter,
    "enumerate": _guarded_enumerate,
    "reversed": _guarded_reversed,
    "min": _guarded_minmax(min),
    "max": _guarded_minmax(max),
    "dict": dict,
    "iter": guarded_getiter,
    "next": next,
    "getattr": guarded_getattr,
    "hasattr": guarded_hasattr,
    "setattr": guarded_setattr,
    "delattr": guarded_delattr,
    "__import__": guarded_import,
}


# Shared by every policy namespace: no policy can reach it (``__builtins__`` is a
# private name), so it cannot be changed from inside.
POLICY_BUILTINS: dict[str, Any] = {
    **{k: v for k, v in safe_builtins.items() if k not in _REMOVED},
    **_ADDED,
}

# Print output goes into a per-function collector (readable as ``printed``), never to
# the worker's stdout, which carries the protocol.
PRINT_GUARD = PrintCollector
