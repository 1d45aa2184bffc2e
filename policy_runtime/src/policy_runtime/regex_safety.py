"""Regular expressions from clients, compiled for linear-time matching.

Python's ``re`` backtracks: a pattern such as ``(a+)+$`` takes exponential time on a
string of ``a``s, and even ``\\s*$`` is quadratic under ``search``, all while holding the
interpreter lock. Client patterns are therefore compiled with RE2, whose matching time is
linear in the input; patterns RE2 cannot run in linear time (backreferences, lookaround)
are refused with the reason, as are overlong patterns.
"""

from __future__ import annotations

import functools

import re2

MAX_PATTERN_LENGTH = 1024
# RE2's memory for one compiled program; patterns needing more are refused.
_MAX_PROGRAM_BYTES = 8 * 1024 * 1024


class UnsafePattern(ValueError):
    """The pattern cannot be matched in linear time; the message says why."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = _MAX_PROGRAM_BYTES
    return options


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re2._Regexp:
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise UnsafePattern(
            f"pattern {pattern[:80]!r} cannot be matched in linear time ({reason}); "
            "backreferences and lookaround are not supported"
        ) from None


def compile_linear(pattern: object, max_length: int = MAX_PATTERN_LENGTH) -> re2._Regexp:
    """The compiled pattern, matched in linear time; UnsafePattern if it cannot be."""
    if not isinstance(pattern, str):
        raise UnsafePattern("a pattern must be a string")
    if len(pattern) > max_length:
        raise UnsafePattern(
            f"pattern of {len(pattern)} characters; the limit is {max_length}"
        )
    return _compile(pattern)


def check_linear(pattern: object, max_length: int = MAX_PATTERN_LENGTH) -> None:
    """Raise UnsafePattern unless ``pattern`` can be matched in linear time."""
    compile_linear(pattern, max_length)
