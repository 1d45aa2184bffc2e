"""The builtins a policy sees.

Start from RestrictedPython's ``safe_builtins``; put back, as wrappers that iterate
through the ``_getiter_`` guard, the iteration helpers RestrictedPython 9.0 dropped
(``sorted``, ``zip``, ``tuple``, ``reversed`` ...); replace ``setattr``/``delattr``
with our guarded versions; add guarded ``getattr``/``hasattr`` and ``__import__``.

The dropped helpers that are types in Python (``list``, ``tuple``, ``set``,
``frozenset``, ``zip``, ``map``, ``filter``, ``enumerate``, ``reversed``) are stand-in
classes rather than plain functions, so that ``isinstance(v, list)``, ``issubclass``,
``list[int]`` and ``class Nodes(list)`` behave as in plain Python while calling them
still runs the guarded constructor.

Nothing here gives access to code objects, frames, namespaces, files or the interpreter:
no ``open``, ``exec``, ``eval``, ``compile``, ``globals``, ``locals``, ``vars``, ``dir``,
``type``, ``object``, ``super``, ``input``, ``breakpoint``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from RestrictedPython.Guards import safe_builtins

from policy_runtime.sandbox.capture import PolicyPrint
from policy_runtime.sandbox.guards import (
    BASE_SUBSTITUTES,
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


class _GuardedType(type):
    """Metaclass of the stand-ins: type checks delegate to the real type, calls construct
    through the guard.

    A stand-in is a subclass of its real type that is never instantiated, so that
    ``list[int]``, ``list | None``, the ``collections.abc`` checks and the unbound methods
    (``list.append``, ``set.union``) behave as in plain Python. It adds no public
    attribute: what a policy reaches through it (unbound methods of the real type) it
    reaches through any instance anyway, and the ``_``-names that lead to the real type
    (``__base__``, ``__mro__``, ``__class__``) and ``mro`` are denied by ``_getattr_``.
    Policy classes derive from the real type instead (``guards.BASE_SUBSTITUTES``).
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        build = _CONSTRUCTORS.get(cls)
        if build is None:
            return super().__call__(*args, **kwargs)
        return build(*args, **kwargs)

    def __instancecheck__(cls, instance: Any) -> bool:
        real = BASE_SUBSTITUTES.get(cls)
        if real is None:
            return super().__instancecheck__(instance)
        return isinstance(instance, real)

    def __subclasscheck__(cls, subclass: Any) -> bool:
        real = BASE_SUBSTITUTES.get(cls)
        if real is None:
            return super().__subclasscheck__(subclass)
        return issubclass(subclass, real)


# Read as "type" in messages such as "type objects cannot be modified by policies".
_GuardedType.__name__ = _GuardedType.__qualname__ = "type"

# Stand-in -> guarded constructor.
_CONSTRUCTORS: dict[type, Callable[..., Any]] = {}


def _stand_in(real: type, constructor: Callable[..., Any]) -> type:
    """The policy-visible class standing for the builtin type ``real``."""
    cls = _GuardedType(
        real.__name__,
        (real,),
        {
            # ``builtins`` so that repr() and error messages read as in plain Python.
            "__module__": "builtins",
            "__qualname__": real.__qualname__,
            "__doc__": real.__doc__,
            "__slots__": (),
        },
    )
    _CONSTRUCTORS[cls] = constructor
    BASE_SUBSTITUTES[cls] = real
    return cls


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
    "tuple": _stand_in(tuple, _iterating(tuple)),
    "list": _stand_in(list, _iterating(list)),
    "set": _stand_in(set, _iterating(set)),
    "frozenset": _stand_in(frozenset, _iterating(frozenset)),
    "all": _iterating(all),
    "any": _iterating(any),
    "sum": _iterating(sum),
    "zip": _stand_in(zip, _guarded_zip),
    "map": _stand_in(map, _guarded_map),
    "filter": _stand_in(filter, _guarded_filter),
    "enumerate": _stand_in(enumerate, _guarded_enumerate),
    "reversed": _stand_in(reversed, _guarded_reversed),
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

# Print output goes into a per-function collector (readable as ``printed``) and the
# call's capture (returned with the answer), never to the worker's stdout, which
# carries the protocol.
PRINT_GUARD = PolicyPrint
