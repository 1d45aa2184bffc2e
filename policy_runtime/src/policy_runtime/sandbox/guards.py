"""The guard functions RestrictedPython calls from compiled policy code.

RestrictedPython rewrites ``a.b`` into ``_getattr_(a, "b")``, ``a[b]`` into
``_getitem_(a, b)``, ``a.b = c`` / ``a[b] = c`` into ``_write_(a).b = c`` and so on.
These functions are the runtime half of the sandbox: whatever they let through, a
policy can reach. The rule of thumb is deny by default.
"""

from __future__ import annotations

import operator
import types
from abc import ABCMeta
from typing import Any

from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence
from RestrictedPython.transformer import INSPECT_ATTRIBUTES


class GuardViolation(BaseException):
    """Raised inside policy code when it reaches for something forbidden.

    A ``BaseException`` so that a policy's ``except Exception`` cannot catch it, and
    recorded when raised so that even a bare ``except:`` cannot hide it: the executor
    reports the first violation of a call whatever the policy did afterwards.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        if not violations:
            violations.append(self)


# The violations raised during the current call (at most the first one); the executor
# reads it after every call. Workers run one call at a time, so a module-level list is
# enough.
violations: list[GuardViolation] = []


def reset_violations() -> None:
    """Forget violations of earlier calls; called before every call into policy code."""
    violations.clear()


# Objects whose every attribute is an introspection route out of the sandbox
# (CVE-2023-37271: generator -> frame -> f_back -> f_globals -> builtins). None of these
# types can be subclassed, so an exact type test is complete; modules can be, and are
# tested with isinstance().
_OPAQUE_TYPES: frozenset[type] = frozenset(
    {
        types.FrameType,
        types.CodeType,
        types.TracebackType,
        types.GeneratorType,
        types.CoroutineType,
        types.AsyncGeneratorType,
        types.CellType,
    }
)

# Attribute names denied on every object, beyond the ``_`` prefix and RestrictedPython's
# INSPECT_ATTRIBUTES: string formatting resolves ``{0.__class__}`` fields outside any guard
# (CVE-2023-41039), AttributeError.obj hands out the object a lookup failed on
# (CVE-2024-47532), and mro() lists every base class.
_DENIED_NAMES = frozenset({"format", "format_map", "obj", "mro", "with_traceback"}) | (
    INSPECT_ATTRIBUTES
)

_RAISE = object()
_ModuleType = types.ModuleType

# Names that passed _check_name. Attribute access is the hottest path of a policy, and
# the verdict on a name never changes; bounded because getattr() takes computed names.
_allowed_names: set[str] = set()
_ALLOWED_NAMES_MAX = 4096


def _check_name(name: object) -> str:
    # An exact ``str`` only: a str subclass could override startswith() and slip a
    # dunder name past the prefix test.
    if type(name) is not str:
        raise GuardViolation("attribute names must be plain strings")
    if name.startswith("_"):
        raise GuardViolation(
            f'access to "{name}" is not allowed: names starting with "_" are private'
        )
    if name in _DENIED_NAMES:
        raise GuardViolation(f'access to "{name}" is not allowed in policies')
    if len(_allowed_names) < _ALLOWED_NAMES_MAX:
        _allowed_names.add(name)
    return name


def guarded_getattr(obj: Any, name: object, default: Any = _RAISE) -> Any:
    """``_getattr_`` and the policy-visible ``getattr`` builtin."""
    # The type test comes first: a str subclass must never match a cached plain name.
    if type(name) is not str or name not in _allowed_names:
        _check_name(name)
    if type(obj) in _OPAQUE_TYPES or isinstance(obj, _ModuleType):
        raise GuardViolation(f"attributes of {type(obj).__name__} objects are not accessible")
    if name == "register" and isinstance(obj, ABCMeta):
        # ABCMeta.register() changes isinstance() answers for every policy in the worker
        # (a policy's own subclass of an ABC too: its base class consults it).
        raise GuardViolation("registering classes with an abstract base class is not allowed")
    if default is _RAISE:
        return getattr(obj, name)  # type: ignore[arg-type] - checked above
    return getattr(obj, name, default)  # type: ignore[arg-type]


def guarded_hasattr(obj: Any, name: object) -> bool:
    """The policy-visible ``hasattr``: same rules as ``getattr``."""
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


# ``_getitem_``: item access has no hidden route, so it is plain indexing (in C).
guarded_getitem = operator.getitem


def guarded_getiter(obj: Any) -> Any:
    """``_getiter_``: iteration over data the policy already holds."""
    return iter(obj)


# Classes created by policy code (through ``__metaclass__``) carry this marker in their
# own __dict__. Only their instances, and plain containers, may be written to: shared
# objects such as classes of the allowed modules must never change, or one policy could
# poison the next one in the same worker. Policy code cannot set the marker itself
# (names starting with "_" do not compile), and a marker in a base class does not count.
_POLICY_CLASS_MARK = "__aios_policy_class__"

_WRITABLE_TYPES = frozenset({dict, list, set, bytearray})


# The policy-visible stand-ins of builtin types (``list``, ``tuple`` ...; see
# ``builtins.py``) mapped to the real types: a policy class deriving from a stand-in
# derives from the real type, as it would in plain Python.
BASE_SUBSTITUTES: dict[type, type] = {}


def policy_class_factory(name: str, bases: tuple, namespace: dict, **kwargs: Any) -> type:
    """``__metaclass__`` of restricted code: builds a class and marks it as policy-owned."""
    if kwargs:
        raise GuardViolation("class keyword arguments are not allowed in policies")
    bases = tuple(
        BASE_SUBSTITUTES.get(base, base) if isinstance(base, type) else base for base in bases
    )
    return type(name, bases, {**namespace, _POLICY_CLASS_MARK: True})


def is_policy_class(cls: object) -> bool:
    return isinstance(cls, type) and _POLICY_CLASS_MARK in cls.__dict__


def guarded_write(obj: Any) -> Any:
    """``_write_``: allow changes only to containers and the policy's own objects."""
    cls = type(obj)
    if cls in _WRITABLE_TYPES or _POLICY_CLASS_MARK in cls.__dict__:
        return obj
    if isinstance(obj, type) and _POLICY_CLASS_MARK in obj.__dict__:
        return obj
    # Instances of the container classes of the allowed ``collections`` module
    # (OrderedDict, Counter, deque, ...) are always fresh objects the policy created:
    # the module proxy exposes those classes, never a shared instance.
    if cls.__module__ == "collections":
        return obj
    raise GuardViolation(f"{cls.__name__} objects cannot be modified by policies")


def guarded_setattr(obj: Any, name: object, value: Any) -> None:
    """The policy-visible ``setattr``."""
    setattr(guarded_write(obj), _check_name(name), value)


def guarded_delattr(obj: Any, name: object) -> None:
    """The policy-visible ``delattr``."""
    delattr(guarded_write(obj), _check_name(name))


_INPLACE_OPERATORS = {
    "+=": operator.iadd,
    "-=": operator.isub,
    "*=": operator.imul,
    "/=": operator.itruediv,
    "//=": operator.ifloordiv,
    "%=": operator.imod,
    "**=": operator.ipow,
    "<<=": operator.ilshift,
    ">>=": operator.irshift,
    "&=": operator.iand,
    "^=": operator.ixor,
    "|=": operator.ior,
}


def guarded_inplacevar(op: str, target: Any, value: Any) -> Any:
    """``_inplacevar_``: ``x += y`` and friends on plain values."""
    try:
        return _INPLACE_OPERATORS[op](target, value)
    except KeyError:
        raise GuardViolation(f"operator {op} is not allowed in policies") from None


def guarded_apply(func: Any, *args: Any, **kwargs: Any) -> Any:
    """``_apply_``: calls written with ``*args``/``**kwargs``."""
    return func(*args, **kwargs)


GUARDS: dict[str, Any] = {
    "_getattr_": guarded_getattr,
    "_getitem_": guarded_getitem,
    "_getiter_": guarded_getiter,
    "_write_": guarded_write,
    "_inplacevar_": guarded_inplacevar,
    "_apply_": guarded_apply,
    "_unpack_sequence_": guarded_unpack_sequence,
    "_iter_unpack_sequence_": guarded_iter_unpack_sequence,
    "__metaclass__": policy_class_factory,
}
