"""The ``logging`` module policies import: a stand-in, never the real module.

Policies written for upstream AIOS log with ``logging.info(...)`` or
``logging.getLogger(__name__).warning(...)``. The real module would hand a policy
handlers, the logger tree, frames (``findCaller``) and the worker's streams, so policies
get this shim instead: the usual functions and level constants, and loggers that hold
only a name and a level. Each record becomes ``{"level", "logger", "message"}`` in the
call's capture (``capture.add_log``, bounded), returned with the decision.

Nothing here keeps state between calls: ``getLogger`` makes a new logger every time (a
level a policy sets lasts as long as its own logger object), and module-level calls log
as ``root`` at every level.
"""

from __future__ import annotations

import sys
from typing import Any

from policy_runtime.sandbox import capture

CRITICAL = 50
FATAL = CRITICAL
ERROR = 40
WARNING = 30
WARN = WARNING
INFO = 20
DEBUG = 10
NOTSET = 0

_LEVEL_NAMES = {
    CRITICAL: "CRITICAL",
    ERROR: "ERROR",
    WARNING: "WARNING",
    INFO: "INFO",
    DEBUG: "DEBUG",
    NOTSET: "NOTSET",
}
_NAME_LEVELS = {name: level for level, name in _LEVEL_NAMES.items()} | {
    "WARN": WARNING,
    "FATAL": CRITICAL,
}


def _text(value: Any) -> str:
    """``str(value)`` as an exact str; policy code (its ``__str__``) may run, and fail."""
    try:
        text = str(value)
    except Exception as exc:  # a policy's __str__ raised
        return f"(the message could not be read: {type(exc).__name__})"
    return str.__str__(text)


def _format(msg: Any, args: tuple) -> str:
    """What ``logging`` makes of ``msg % args``; a failure is recorded, not raised."""
    text = _text(msg)
    if not args:
        return text
    mapping: Any
    if len(args) == 1 and isinstance(args[0], dict) and args[0]:
        mapping = args[0]
    else:
        mapping = args
    try:
        return _text(text % mapping)
    except Exception as exc:  # the format and the arguments do not match
        return f"{text} (arguments not formatted: {type(exc).__name__}: {_text(exc)})"


def _exception_text() -> str:
    exc = sys.exc_info()[1]
    if exc is None:
        return "NoneType: None"
    return f"{type(exc).__name__}: {_text(exc)}"


def _level_value(level: Any) -> int:
    if isinstance(level, bool):
        raise TypeError(f"Level not an integer or a valid string: {level!r}")
    if isinstance(level, int):
        return int.__int__(level)
    if isinstance(level, str) and str.__str__(level) in _NAME_LEVELS:
        return _NAME_LEVELS[str.__str__(level)]
    raise ValueError(f"Unknown level: {_text(level)!r}")


def _level_name(level: int) -> str:
    return _LEVEL_NAMES.get(level, f"Level {level}")


def _emit(logger: str, level: int, msg: Any, args: tuple, exc_info: Any = None) -> None:
    message = _format(msg, args)
    logger = _text(logger)  # a policy's subclass of Logger may name itself with anything
    if exc_info:
        message = f"{message}\n{_exception_text()}"
    capture.add_log(_level_name(level), logger, message)


def _own(target: Any) -> None:
    """Refuse a method called unbound on something that is not a Logger: it would write
    ``level`` or ``name`` onto that object (a function, a class) past the write guard, and
    such objects are shared by every policy of the worker."""
    if not isinstance(target, Logger):
        raise TypeError(f"a Logger method called on {type(target).__name__}, not a Logger")


class Logger:
    """A policy's logger: a name and a level, nothing else."""

    __slots__ = ("level", "name")

    def __init__(self, name: str, level: int = NOTSET) -> None:
        _own(self)
        self.name = name
        self.level = level

    def __repr__(self) -> str:
        return f"<Logger {self.name} ({_level_name(self.level)})>"

    def setLevel(self, level: Any) -> None:
        _own(self)
        self.level = _level_value(level)

    def getEffectiveLevel(self) -> int:
        return self.level

    def isEnabledFor(self, level: Any) -> bool:
        return _level_value(level) >= self.level

    def getChild(self, suffix: Any) -> Logger:
        name = _text(suffix) if self.name == "root" else f"{self.name}.{_text(suffix)}"
        return Logger(name[: capture.MAX_LOGGER_NAME_CHARS], self.level)

    def log(self, level: Any, msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        value = _level_value(level)
        if value >= self.level:
            _emit(self.name, value, msg, args, exc_info)

    def debug(self, msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        self.log(DEBUG, msg, *args, exc_info=exc_info)

    def info(self, msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        self.log(INFO, msg, *args, exc_info=exc_info)

    def warning(self, msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        self.log(WARNING, msg, *args, exc_info=exc_info)

    warn = warning

    def error(self, msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        self.log(ERROR, msg, *args, exc_info=exc_info)

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        self.log(ERROR, msg, *args, exc_info=exc_info)

    def critical(self, msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
        self.log(CRITICAL, msg, *args, exc_info=exc_info)

    fatal = critical

    # Configuring handlers is the runtime's business: accepted and ignored.
    def addHandler(self, handler: Any) -> None:
        return None

    def removeHandler(self, handler: Any) -> None:
        return None

    def hasHandlers(self) -> bool:
        return True


def getLogger(name: Any = None) -> Logger:
    """A new logger named ``name`` (``root`` without one)."""
    text = "root" if name is None or name == "" else _text(name)
    return Logger(text[: capture.MAX_LOGGER_NAME_CHARS])


def _root(level: int, msg: Any, args: tuple, exc_info: Any) -> None:
    _emit("root", level, msg, args, exc_info)


def debug(msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
    _root(DEBUG, msg, args, exc_info)


def info(msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
    _root(INFO, msg, args, exc_info)


def warning(msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
    _root(WARNING, msg, args, exc_info)


def error(msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
    _root(ERROR, msg, args, exc_info)


def exception(msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
    _root(ERROR, msg, args, exc_info)


def critical(msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
    _root(CRITICAL, msg, args, exc_info)


def log(level: Any, msg: Any, *args: Any, exc_info: Any = None, **kwargs: Any) -> None:
    _root(_level_value(level), msg, args, exc_info)


def basicConfig(*args: Any, **kwargs: Any) -> None:
    """Accepted and ignored: records always come back with the decision."""
    return None


def getLevelName(level: Any) -> Any:
    if isinstance(level, int) and not isinstance(level, bool):
        return _level_name(int.__int__(level))
    return _NAME_LEVELS.get(level, f"Level {_text(level)}")


def disable(level: Any = CRITICAL) -> None:
    """Accepted and ignored."""
    return None


# The names ``import logging`` gives a policy.
MEMBERS: dict[str, Any] = {
    "CRITICAL": CRITICAL,
    "FATAL": FATAL,
    "ERROR": ERROR,
    "WARNING": WARNING,
    "WARN": WARN,
    "INFO": INFO,
    "DEBUG": DEBUG,
    "NOTSET": NOTSET,
    "Logger": Logger,
    "getLogger": getLogger,
    "basicConfig": basicConfig,
    "getLevelName": getLevelName,
    "disable": disable,
    "debug": debug,
    "info": info,
    "warning": warning,
    "warn": warning,
    "error": error,
    "exception": exception,
    "critical": critical,
    "fatal": critical,
    "log": log,
}
