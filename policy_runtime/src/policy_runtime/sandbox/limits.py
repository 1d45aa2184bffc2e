"""Hard resource limits of a sandbox worker process (Linux rlimits)."""

from __future__ import annotations

import math
import os
import resource

_PAGE = os.sysconf("SC_PAGE_SIZE")
MIB = 1024 * 1024
# What a worker may keep allocated between calls (compiled policies, what a policy's
# module-level names hold) before it is replaced; each call's own memory limit counts
# from what is allocated when it starts, so what earlier calls keep never counts
# against it.
RETAINED_LIMIT_MB = 64


def address_space_bytes() -> int:
    """Current virtual memory size of this process."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[0]) * _PAGE


class AddressSpace:
    """address_space_bytes() for a measurement after every call: the file stays open."""

    def __init__(self) -> None:
        self._fd = os.open("/proc/self/statm", os.O_RDONLY)

    def current(self) -> int:
        return int(os.pread(self._fd, 128, 0).split()[0]) * _PAGE


def apply_process_limits(max_memory_mb: int) -> int:
    """Limits that hold for the worker's whole life; returns its baseline address space.

    No core dumps, no file writes, and an address-space ceiling of the baseline plus the
    service-wide memory cap (plus what the worker may retain between calls) that no
    single evaluation can raise.
    """
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    baseline = address_space_bytes()
    ceiling = baseline + (max_memory_mb + RETAINED_LIMIT_MB) * MIB
    resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    return baseline


class CallLimits:
    """Per-evaluation memory and CPU limits, set before a call and lifted after it.

    ``allocated`` is the worker's address space when the call starts: the call may
    allocate ``memory_mb`` on top of it.
    """

    def __init__(self, allocated: int, memory_mb: int, timeout_seconds: float) -> None:
        self._memory = allocated + memory_mb * MIB
        self._cpu_seconds = max(1, math.ceil(timeout_seconds))

    def __enter__(self) -> CallLimits:
        _, hard_as = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (min(self._memory, hard_as), hard_as))
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used = math.ceil(usage.ru_utime + usage.ru_stime)
        # SIGXCPU arrives when the call has used its CPU allowance; the parent's
        # wall-clock timer is the primary stop, this is the backstop inside the worker.
        resource.setrlimit(resource.RLIMIT_CPU, (used + self._cpu_seconds, resource.RLIM_INFINITY))
        return self

    def __exit__(self, *exc: object) -> None:
        _, hard_as = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (hard_as, hard_as))
        resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
