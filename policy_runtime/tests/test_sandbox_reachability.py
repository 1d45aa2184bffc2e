"""Walk everything a policy can reach through attribute access and look for escapes.

Starting from the policy builtins, every allowed module proxy and instances of the
types policies commonly create, follow every attribute name the ``_getattr_`` guard lets
through, a few levels deep. Nothing reached may be a module, frame, code object,
traceback, namespace dict or an unrestricted builtin, and no shared mutable container
may be reachable (writing to it would affect every later policy in the worker).
"""

from __future__ import annotations

import builtins
import collections
import datetime
import decimal
import fractions
import json
import re
import sys
import types
from typing import Any

from policy_runtime.sandbox.builtins import POLICY_BUILTINS
from policy_runtime.sandbox.guards import (
    BASE_SUBSTITUTES,
    GuardViolation,
    guarded_getattr,
    policy_class_factory,
    reset_violations,
)
from policy_runtime.sandbox.modules import PROXIES

MAX_DEPTH = 4

FORBIDDEN_TYPES = (
    types.ModuleType,
    types.FrameType,
    types.CodeType,
    types.TracebackType,
    types.GeneratorType,
    types.CoroutineType,
    types.AsyncGeneratorType,
)

UNRESTRICTED_BUILTINS = {
    id(getattr(builtins, name))
    for name in (
        "eval", "exec", "compile", "open", "__import__", "globals", "locals", "vars", "dir",
        "getattr", "setattr", "delattr", "input", "breakpoint", "type", "object", "super",
        "memoryview", "classmethod", "staticmethod", "property",
    )
}
NAMESPACE_DICTS = {id(vars(module)) for module in list(sys.modules.values())} | {
    id(sys.modules)
}
SHARED_MUTABLE_TYPES = (dict, list, set, bytearray)


def _seeds() -> dict[str, Any]:
    seeds: dict[str, Any] = {f"builtins.{k}": v for k, v in POLICY_BUILTINS.items()}
    seeds.update({f"module.{name}": proxy for name, proxy in PROXIES.items()})
    samples = {
        "int": 1, "float": 1.5, "complex": 1j, "str": "a", "bytes": b"a", "list": [1],
        "dict": {"a": 1}, "set": {1}, "tuple": (1,), "range": range(2), "slice": slice(1),
        "bool": True, "none": None, "lambda": lambda: 1, "exception": ValueError("x"),
        "decimal": decimal.Decimal("1.5"), "fraction": fractions.Fraction(1, 3),
        "date": datetime.date(2026, 1, 1), "datetime": datetime.datetime(2026, 1, 1),
        "timedelta": datetime.timedelta(1), "timezone": datetime.UTC,
        "pattern": re.compile("a"), "match": re.match("a", "a"),
        "counter": collections.Counter("ab"), "deque": collections.deque([1]),
        "ordered": collections.OrderedDict(a=1), "default": collections.defaultdict(list),
        "chain": collections.ChainMap({}), "namedtuple": collections.namedtuple("P", "x")(1),
        "decoder": json.JSONDecoder(), "encoder": json.JSONEncoder(),
        "map": map(str, [1]), "zip": zip([1]), "enumerate": enumerate([1]),
        "reversed": reversed([1]), "iterator": iter([1]), "dict_items": {}.items(),
        # What policies make of the builtin types: generic aliases, unions, subclasses.
        "generic_alias": POLICY_BUILTINS["list"][int],
        "generic_dict": POLICY_BUILTINS["dict"][str, int],
        "union": POLICY_BUILTINS["list"] | None,
        "policy_subclass": policy_class_factory("Nodes", (POLICY_BUILTINS["list"],), {}),
    }
    seeds.update({f"sample.{k}": v for k, v in samples.items()})
    return seeds


def _reachable(seeds: dict[str, Any]) -> dict[int, tuple[str, Any]]:
    seen: dict[int, tuple[str, Any]] = {}
    frontier = list(seeds.items())
    keep_alive = []
    for depth in range(MAX_DEPTH + 1):
        next_frontier = []
        for path, obj in frontier:
            if id(obj) in seen:
                continue
            seen[id(obj)] = (path, obj)
            keep_alive.append(obj)
            if depth == MAX_DEPTH or isinstance(obj, FORBIDDEN_TYPES):
                continue
            try:
                names = dir(obj)
            except Exception:
                continue
            for name in names:
                try:
                    value = guarded_getattr(obj, name)
                except GuardViolation:
                    continue
                except Exception:
                    continue
                next_frontier.append((f"{path}.{name}", value))
        frontier = next_frontier
    reset_violations()
    return seen


def _problems(reached: dict[int, tuple[str, Any]]) -> list[str]:
    problems = []
    for path, obj in reached.values():
        if isinstance(obj, FORBIDDEN_TYPES):
            problems.append(f"{path} is a {type(obj).__name__}")
        elif id(obj) in UNRESTRICTED_BUILTINS:
            problems.append(f"{path} is the unrestricted builtin {obj!r}")
        elif id(obj) in NAMESPACE_DICTS:
            problems.append(f"{path} is a module namespace")
        elif isinstance(obj, SHARED_MUTABLE_TYPES) and not path.startswith("sample."):
            # Containers inside the samples are the test's own; anything else is shared.
            problems.append(f"{path} is a shared {type(obj).__name__}")
    return sorted(problems)


def test_nothing_dangerous_is_reachable() -> None:
    reached = _reachable(_seeds())
    assert len(reached) > 1000, f"the walk covered only {len(reached)} objects"
    problems = _problems(reached)
    assert not problems, "\n".join(problems[:50])


def test_the_builtin_types_are_stand_ins_that_hide_the_real_types() -> None:
    stand_ins = {
        name: POLICY_BUILTINS[name]
        for name in ("list", "tuple", "set", "frozenset", "zip", "map", "filter",
                     "enumerate", "reversed")
    }
    assert {BASE_SUBSTITUTES[cls] for cls in stand_ins.values()} == {
        getattr(builtins, name) for name in stand_ins
    }
    # From the builtins and the modules (not from the test's own samples, which were
    # built with the real types), no attribute path leads to a real type behind a
    # stand-in, nor to the stand-ins' metaclass: a policy only ever holds the stand-ins.
    seeds = {k: v for k, v in _seeds().items() if not k.startswith("sample.")}
    hidden = {id(getattr(builtins, name)) for name in stand_ins}
    hidden |= {id(type(cls)) for cls in stand_ins.values()}
    leaks = sorted(path for path, obj in _reachable(seeds).values() if id(obj) in hidden)
    assert not leaks, leaks
    assert "type" not in POLICY_BUILTINS and "object" not in POLICY_BUILTINS
    # A policy class deriving from a stand-in derives from the real type.
    subclass = policy_class_factory("Nodes", (stand_ins["list"],), {})
    assert subclass.__bases__ == (list,) and type(subclass) is type


def test_the_walk_finds_a_planted_escape() -> None:
    planted = types.SimpleNamespace(
        config=types.SimpleNamespace(codec=json.codecs, table={"a": 1}, run=getattr)
    )
    problems = _problems(_reachable({"planted": planted}))
    assert problems == [
        "planted.config.codec is a module",
        "planted.config.run is the unrestricted builtin <built-in function getattr>",
        "planted.config.table is a shared dict",
    ]
