"""Isolation between the policies one worker runs, one after another.

A worker is reused across policies, so whatever one evaluation leaves behind in the
process must not reach the next. Three defences, all run inside each call's own time
and error accounting (see ``executor.finish_call``):

* Shared state is watched. At start the worker records every mutable container
  reachable from the allowed modules and builtins (class attributes, default arguments,
  walked automatically, so a new one in a library update is covered too) and the ABC
  registration counter (``abc.get_cache_token()``, bumped by every ``register()``).
  After each call both are compared; a change fails that call with SandboxViolation
  and the worker is replaced before it serves anyone else.
* No policy code runs in another policy's call. The automatic cyclic collector is off
  in workers; each call ends with a collection of the objects it allocated, so a
  generator's ``finally`` runs in its own policy's call or never. Library caches that
  could keep a policy's objects alive and drop them during a later call (typing's
  subscription caches, re's and strptime's pattern caches keyed by a ``str`` subclass)
  are emptied of those objects at the same point.
* Retained memory is measured after each call; above ``RETAINED_LIMIT_MB`` the worker
  is replaced (see ``worker.py``).
"""

from __future__ import annotations

import _strptime
import abc
import gc
import re
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

_CONTAINERS = (list, dict, set, bytearray)
_CALLABLES = (types.FunctionType, staticmethod, classmethod, property)

# Set when a call changed shared state: the worker answers, then is replaced.
tainted = False


def _containers(roots: Iterable[Any]) -> list[Any]:
    """Mutable containers reachable from ``roots`` through classes and default arguments."""
    seen: set[int] = set()
    found: list[Any] = []
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, _CONTAINERS):
            found.append(obj)
        elif isinstance(obj, (staticmethod, classmethod)):
            stack.append(obj.__func__)
        elif isinstance(obj, property):
            stack.extend(f for f in (obj.fget, obj.fset, obj.fdel) if f is not None)
        elif isinstance(obj, types.FunctionType):
            stack.extend(obj.__defaults__ or ())
            stack.extend((obj.__kwdefaults__ or {}).values())
        elif isinstance(obj, type) and obj is not object:
            # Policy code reads no "_" attribute (guards._check_name), but it calls
            # methods of any name (``__init__`` on construction), and so reaches their
            # default arguments.
            stack.extend(
                v for k, v in vars(obj).items()
                if not k.startswith("_") or isinstance(v, _CALLABLES)
            )
            stack.extend(obj.__mro__[1:])
    return found


def _fingerprint(container: Any) -> tuple:
    # Identities only: comparing values could call a policy's __eq__.
    if isinstance(container, dict):
        return tuple(map(id, dict.keys(container))) + tuple(map(id, dict.values(container)))
    if isinstance(container, bytearray):
        return (bytes(container),)
    return tuple(map(id, container))


class SharedStateWatch:
    """The shared state policies could write to, and whether it still is as recorded."""

    def __init__(self, roots: Iterable[Any]) -> None:
        containers = _containers(roots)
        self._containers = tuple(containers)
        self._sizes = tuple(map(len, containers))
        self._filled = tuple((c, _fingerprint(c)) for c in containers if c)
        self._token = abc.get_cache_token()

    def __len__(self) -> int:
        return len(self._containers)

    def changed(self) -> str | None:
        """A description of the first change since the watch began, else None."""
        if abc.get_cache_token() != self._token:
            return "a class of the allowed modules was registered with an abstract base class"
        if tuple(map(len, self._containers)) != self._sizes:
            changed = next(
                c for c, size in zip(self._containers, self._sizes, strict=True)
                if len(c) != size
            )
            return f"a shared {type(changed).__name__} of the allowed modules was changed"
        for container, fingerprint in self._filled:
            if _fingerprint(container) != fingerprint:
                return f"a shared {type(container).__name__} of the allowed modules was changed"
        return None


watch: SharedStateWatch | None = None


def arm(roots: Iterable[Any]) -> SharedStateWatch:
    """Start watching (workers only: the check belongs to a process policies cannot share)."""
    global watch
    gc.disable()
    watch = SharedStateWatch(roots)
    return watch


# -- library caches that can hold a policy's objects ------------------------------------
# The allowed modules whose caches a policy can fill, once some policy in this worker
# imported them (``modules.guarded_import`` records it): until then their caches hold
# nothing of any policy's and are not looked at.
CACHING_MODULES = frozenset({"typing", "re", "datetime"})
imported: set[str] = set()

_TYPING_CACHE_CLEARS = tuple(getattr(typing, "_cleanups", ()))
_EXACT_TEXT = (str, bytes)


def _re_cache() -> dict:
    return getattr(re, "_cache", {})


def _strptime_cache() -> dict:
    return getattr(_strptime, "_regex_cache", {})


class _CacheAudit:
    """Drops cache entries keyed by non-builtin objects.

    These caches are dicts that only ever add at the end (and drop from the front, or
    clear): a cache whose newest key is still the one seen last time has not gained an
    entry, and is not scanned.
    """

    def __init__(self) -> None:
        self._newest: dict[int, Any] = {}

    def _scan(self, cache: dict, foreign: Callable[[Any], bool]) -> None:
        newest = next(reversed(cache), None)
        if newest is self._newest.get(id(cache)):
            return
        for key in [k for k in cache if foreign(k)]:
            cache.pop(key, None)
        self._newest[id(cache)] = next(reversed(cache), None)

    def run(self) -> None:
        if "datetime" in imported:
            self._scan(_strptime_cache(), lambda k: type(k) is not str)
        if "re" not in imported:
            return
        # re._cache keys are (type(pattern), pattern, flags).
        self._scan(
            _re_cache(),
            lambda k: type(k) is not tuple or k[0] not in _EXACT_TEXT or type(k[2]) is not int,
        )
        # re._compile_repl is an lru_cache (keys out of reach): emptied whenever it is
        # not, which costs a policy that calls sub() a template compilation per call.
        compile_repl = getattr(re, "_compile_repl", None)
        if compile_repl is not None and hasattr(compile_repl, "cache_info"):
            if compile_repl.cache_info().currsize:
                compile_repl.cache_clear()


_audit = _CacheAudit()


def end_of_call() -> None:
    """Release what the finished call left in shared caches and collect its garbage.

    Runs inside the call's limits: finalizers it triggers are that policy's own code.
    """
    if imported:
        if "typing" in imported:
            for clear in _TYPING_CACHE_CLEARS:
                clear()
        _audit.run()
    if watch is not None:
        gc.collect(0)


def check_shared_state() -> str | None:
    """The change a call made to shared state (and mark the worker tainted), else None."""
    global tainted
    if watch is None:
        return None
    change = watch.changed()
    if change is not None:
        tainted = True
    return change
