"""What a policy printed and logged during one call, bounded, returned with its answer.

A worker runs one call at a time: :func:`begin` starts a fresh capture before each call
and :func:`collected` hands back what it gathered, so nothing one policy printed or
logged reaches another policy's answer. The state lives in this module only; no object
a policy can reach refers to it (the print collector and the ``logging`` shim call the
functions below), and what comes out is plain text and plain dicts.
"""

from __future__ import annotations

from typing import Any

from RestrictedPython.PrintCollector import PrintCollector

# Bounds of what one call can leave: text beyond them is dropped, with a marker.
MAX_PRINTED_CHARS = 16 * 1024
MAX_LOG_RECORDS = 100
MAX_LOG_MESSAGE_CHARS = 2048
MAX_LOGGER_NAME_CHARS = 200

_TRUNCATED = "\n[... output truncated: a call keeps at most {} characters of printed text]\n"


class _Capture:
    __slots__ = ("logs", "logs_dropped", "printed", "printed_chars", "printed_truncated")

    def __init__(self) -> None:
        self.printed: list[str] = []
        self.printed_chars = 0
        self.printed_truncated = False
        self.logs: list[dict[str, str]] = []
        self.logs_dropped = 0


_current = _Capture()


def begin() -> None:
    """Start capturing for a new call; what the previous call left is discarded."""
    global _current
    _current = _Capture()


def write_printed(text: Any) -> None:
    """Append printed text (``print`` hands over exact ``str`` values)."""
    capture = _current
    if capture.printed_truncated or not isinstance(text, str):
        return
    text = str.__str__(text)  # a str subclass's own methods never run here
    room = MAX_PRINTED_CHARS - capture.printed_chars
    if len(text) > room:
        capture.printed.append(text[:room])
        capture.printed_chars = MAX_PRINTED_CHARS
        capture.printed_truncated = True
        return
    capture.printed.append(text)
    capture.printed_chars += len(text)


def add_log(level: str, logger: str, message: str) -> None:
    """Record one log record (exact strings; cut to their bounds)."""
    capture = _current
    if len(capture.logs) >= MAX_LOG_RECORDS:
        capture.logs_dropped += 1
        return
    if len(message) > MAX_LOG_MESSAGE_CHARS:
        message = message[:MAX_LOG_MESSAGE_CHARS] + " [...]"
    capture.logs.append(
        {
            "level": _encodable(level[:MAX_LOGGER_NAME_CHARS]),
            "logger": _encodable(logger[:MAX_LOGGER_NAME_CHARS]),
            "message": _encodable(message),
        }
    )


def _encodable(text: str) -> str:
    try:
        text.encode()
    except UnicodeEncodeError:  # lone surrogates
        return text.encode("utf-8", "backslashreplace").decode()
    return text


def collected() -> dict[str, Any]:
    """``{"printed": str, "logs": [...]}`` of the current call, as plain JSON values
    that always encode (lone surrogates are escaped)."""
    capture = _current
    printed = _encodable("".join(capture.printed))
    if capture.printed_truncated:
        printed += _TRUNCATED.format(MAX_PRINTED_CHARS)
    logs = list(capture.logs)
    if capture.logs_dropped:
        logs.append(
            {
                "level": "WARNING",
                "logger": "aios.policy",
                "message": f"{capture.logs_dropped} more log records were dropped: a call keeps "
                f"at most {MAX_LOG_RECORDS}",
            }
        )
    return {"printed": printed, "logs": logs}


class PolicyPrint(PrintCollector):
    """The ``_print_`` of policy code: RestrictedPython's collector (``printed`` reads a
    function's own output as before) that also hands what is printed to the capture."""

    def write(self, text: str) -> None:
        super().write(text)
        write_printed(text)

    def flush(self) -> None:
        """``print(..., flush=True)``: nothing is buffered."""
