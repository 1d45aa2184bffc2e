"""Typed errors of policy compilation and evaluation.

Every failure a caller can see is one of these types; the type name is part of the
public contract (CLI output, API envelopes), so never rename one.
"""

from __future__ import annotations


class PolicyRuntimeError(Exception):
    """Base of every error reported to callers as ``{"type", "message"}``."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    @property
    def type_name(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, str]:
        return {"type": self.type_name, "message": self.message}


class CompileError(PolicyRuntimeError):
    """The source is not valid restricted Python (syntax or a forbidden construct)."""


class SandboxViolation(PolicyRuntimeError):
    """The policy tried to reach something the sandbox forbids."""


class Timeout(PolicyRuntimeError):
    """The evaluation ran past its time limit and was stopped."""


class MemoryLimit(PolicyRuntimeError):
    """The evaluation needed more memory than its limit allows."""


class PolicyError(PolicyRuntimeError):
    """The policy itself raised an exception."""


class InvalidPolicy(PolicyRuntimeError):
    """The policy compiles but does not follow the AIOSv1PolicyRule contract."""


class InvalidInput(PolicyRuntimeError):
    """The input, parameters or settings do not match the policy's schemas."""


class InvalidOutput(PolicyRuntimeError):
    """The policy's result is not JSON or does not match its output schema."""


ERROR_TYPES: dict[str, type[PolicyRuntimeError]] = {
    cls.__name__: cls
    for cls in (
        CompileError,
        SandboxViolation,
        Timeout,
        MemoryLimit,
        PolicyError,
        InvalidPolicy,
        InvalidInput,
        InvalidOutput,
    )
}


def error_from_dict(data: dict) -> PolicyRuntimeError:
    """Rebuild a typed error from its ``{"type", "message"}`` form (e.g. from a worker)."""
    cls = ERROR_TYPES.get(str(data.get("type")), PolicyError)
    return cls(str(data.get("message", "")))
