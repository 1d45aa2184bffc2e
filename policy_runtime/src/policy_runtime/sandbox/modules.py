"""The modules a policy may import, and the read-only proxies it gets instead of them.

A real module object is an escape route: ``json.codecs``, ``typing.sys`` and
``datetime.sys`` are ordinary attributes in CPython 3.11. So ``import json`` inside a
policy binds a :class:`ModuleProxy` holding only the names listed here, and nothing
else of the module can be reached through it.
"""

from __future__ import annotations

import copy
import functools
import importlib
import sys
import types
from collections.abc import Iterable
from typing import Any

from policy_runtime.sandbox import logshim
from policy_runtime.sandbox.guards import GuardViolation, is_policy_class
from policy_runtime.sandbox.isolation import CACHING_MODULES, imported

# ``None`` means every public name of the module (``__all__`` where it has one, else names
# without a leading underscore), minus submodules and the names in _EXCLUDED.
ALLOWED_MODULES: dict[str, tuple[str, ...] | None] = {
    "math": None,
    "statistics": None,
    "itertools": None,
    "bisect": None,
    "heapq": None,
    "operator": None,
    "json": ("dumps", "loads", "JSONDecodeError", "JSONDecoder", "JSONEncoder"),
    "re": (
        "compile", "search", "match", "fullmatch", "split", "findall", "finditer",
        "sub", "subn", "escape", "error", "Pattern", "Match",
        "A", "ASCII", "I", "IGNORECASE", "M", "MULTILINE", "S", "DOTALL", "X", "VERBOSE",
    ),
    "datetime": (
        "date", "datetime", "time", "timedelta", "timezone", "tzinfo", "MINYEAR", "MAXYEAR",
    ),
    "collections": (
        "ChainMap", "Counter", "OrderedDict", "UserDict", "UserList", "UserString",
        "defaultdict", "deque", "namedtuple",
    ),
    "functools": ("reduce", "partial", "cmp_to_key", "total_ordering"),
    "copy": ("copy", "deepcopy"),
    # getcontext/setcontext/localcontext change the worker's shared decimal context, and
    # the *Context constants are shared mutable objects: neither is exposed.
    "decimal": (
        "Decimal", "Context", "DecimalException", "InvalidOperation", "DivisionByZero",
        "Inexact", "Rounded", "Overflow", "Underflow", "ROUND_CEILING", "ROUND_DOWN",
        "ROUND_FLOOR", "ROUND_HALF_DOWN", "ROUND_HALF_EVEN", "ROUND_HALF_UP", "ROUND_UP",
        "ROUND_05UP",
    ),
    "fractions": ("Fraction",),
    # Only what type annotations need: get_type_hints() and ForwardRef evaluate strings
    # as unrestricted code, NamedTuple/TypedDict build classes outside the guards.
    "typing": (
        "Any", "Optional", "Union", "List", "Dict", "Tuple", "Set", "FrozenSet", "Iterable",
        "Iterator", "Mapping", "MutableMapping", "Sequence", "MutableSequence", "Callable",
        "Literal", "TYPE_CHECKING", "cast",
    ),
}

# Names that perform attribute access or item writes in C, outside ``_getattr_`` and
# ``_write_`` (operator.attrgetter("__class__") is a classic escape).
_EXCLUDED: dict[str, frozenset[str]] = {
    "operator": frozenset({"attrgetter", "methodcaller", "setitem", "delitem"}),
}



def _total_ordering_for_policy_classes(cls: type) -> type:
    # functools.total_ordering setattr()s on the class it is given, outside ``_write_``:
    # given a class of an allowed module it would change that class for every policy.
    if not (isinstance(cls, type) and is_policy_class(cls)):
        raise GuardViolation("total_ordering may only decorate classes the policy defines")
    return functools.total_ordering(cls)


def _deepcopy_with_plain_memo(x: Any, memo: dict | None = None) -> Any:
    # deepcopy() passes its shared default list (``_nil``) to ``memo.get``: a policy's
    # dict subclass as memo would receive it and could leave data in it for the next
    # policy. A plain dict's get() runs no policy code.
    if memo is not None and type(memo) is not dict:
        raise GuardViolation("copy.deepcopy() accepts only a plain dict as memo")
    return copy.deepcopy(x, memo)


# Names whose real function needs a guard in front of it.
_REPLACED: dict[str, dict[str, Any]] = {
    "functools": {"total_ordering": _total_ordering_for_policy_classes},
    "copy": {"deepcopy": _deepcopy_with_plain_memo},
}


class ModuleProxy:
    """A read-only view of the allowed names of one module.

    It must never answer ``__name__``: ``from json import decoder`` falls back to
    ``sys.modules[f"{module.__name__}.decoder"]`` when the attribute lookup fails, which
    would hand out the real submodule.
    """

    __slots__ = ("_members", "_name")

    def __init__(self, name: str, members: dict[str, Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_members", types.MappingProxyType(dict(members)))

    def __getattr__(self, attr: str) -> Any:
        try:
            return self._members[attr]
        except KeyError:
            raise AttributeError(
                f"module {self._name!r} has no attribute {attr!r} available to policies"
            ) from None

    def __setattr__(self, attr: str, value: Any) -> None:
        raise GuardViolation(f"module {self._name!r} is read-only in policies")

    def __delattr__(self, attr: str) -> None:
        raise GuardViolation(f"module {self._name!r} is read-only in policies")

    def __dir__(self) -> Iterable[str]:
        return sorted(self._members)

    def __repr__(self) -> str:
        return f"<policy module {self._name!r}>"

    # A proxy is immutable: copying it yields itself, so copy/deepcopy never look inside.
    def __copy__(self) -> ModuleProxy:
        return self

    def __deepcopy__(self, memo: dict) -> ModuleProxy:
        return self

    def __reduce__(self) -> Any:
        raise TypeError("policy modules cannot be pickled")


def _public_names(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return list(names)


def _build_proxy(name: str) -> ModuleProxy:
    module = importlib.import_module(name)
    listed = ALLOWED_MODULES[name]
    names = _public_names(module) if listed is None else list(listed)
    excluded = _EXCLUDED.get(name, frozenset())
    members: dict[str, Any] = {}
    for attr in names:
        if attr in excluded or attr.startswith("_"):
            continue
        value = _REPLACED.get(name, {}).get(attr) or getattr(module, attr)
        if isinstance(value, types.ModuleType):
            continue
        members[attr] = value
    return ModuleProxy(name, members)


# Modules policies import as a stand-in written for them, never the real module
# (``logging``: see logshim.py).
SHIM_MODULES: dict[str, dict[str, Any]] = {"logging": logshim.MEMBERS}

PROXIES: dict[str, ModuleProxy] = {name: _build_proxy(name) for name in ALLOWED_MODULES} | {
    name: ModuleProxy(name, members) for name, members in SHIM_MODULES.items()
}

# Every module name a policy may import.
IMPORTABLE: frozenset[str] = frozenset(PROXIES)


def exposed_objects() -> list[Any]:
    """Every object the module proxies hand out, and the real functions behind the
    replaced ones (the roots of the shared-state watch)."""
    exposed = [value for proxy in PROXIES.values() for value in proxy._members.values()]
    for name, replaced in _REPLACED.items():
        module = importlib.import_module(name)
        exposed.extend(getattr(module, attr) for attr in replaced)
    return exposed


def guarded_import(
    name: str,
    globals: dict | None = None,
    locals: dict | None = None,
    fromlist: tuple | list | None = (),
    level: int = 0,
) -> ModuleProxy | None:
    """``__import__`` of restricted code: allowed modules only, as proxies.

    C code that runs on a policy's behalf (``datetime.strftime`` needs ``time``) imports
    through the same ``__import__`` (``PyImport_Import``) with a *list* as ``fromlist``,
    which policy source cannot produce: the ``import`` statement passes None or a tuple,
    and the name ``__import__`` is off limits. That caller reads the module from
    ``sys.modules`` itself and ignores what we return, so such imports of modules the
    worker has already loaded get ``None`` and nothing leaks.
    """
    if type(fromlist) is list and name in sys.modules:
        return None
    if level != 0:
        raise GuardViolation("relative imports are not allowed in policies")
    proxy = PROXIES.get(name)
    if name in CACHING_MODULES:
        imported.add(name)
    if proxy is None:
        allowed = ", ".join(sorted(IMPORTABLE))
        raise GuardViolation(f"import of {name!r} is not allowed; policies may import: {allowed}")
    return proxy
