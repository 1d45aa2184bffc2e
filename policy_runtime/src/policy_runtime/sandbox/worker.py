"""A sandbox worker process: reads requests on stdin, runs policies, answers on stdout.

Started by the pool as ``python -I -m policy_runtime.sandbox.worker``, with an
environment that holds no secrets. It applies its own rlimits before reading the first
request, keeps compiled policies in a small cache keyed by the code's sha256, and never
lets anything but protocol frames reach the parent.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import sys
import time
from collections import OrderedDict
from typing import Any

from policy_runtime.errors import InvalidOutput, InvalidPolicy, PolicyRuntimeError
from policy_runtime.sandbox import protocol
from policy_runtime.sandbox.compiler import PolicyContract, compile_policy
from policy_runtime.sandbox.executor import CpuTimeExceeded, evaluate, load_policy, manage
from policy_runtime.sandbox.limits import CallLimits, apply_process_limits

CACHE_SIZE = 128

# Modules the allowed API imports lazily; importing them now keeps file access and
# import machinery out of evaluations.
_PRELOAD = ("_strptime", "time", "encodings.idna", "json.decoder", "json.encoder", "decimal")


def _on_sigxcpu(signum: int, frame: object) -> None:
    raise CpuTimeExceeded()


class Worker:
    """The request loop of one worker process."""

    def __init__(self, baseline: int) -> None:
        self._baseline = baseline
        self._cache: OrderedDict[str, PolicyContract] = OrderedDict()

    def _policy(self, request: dict) -> PolicyContract | None:
        sha = request["sha"]
        policy = self._cache.get(sha)
        if policy is not None:
            self._cache.move_to_end(sha)
            return policy
        source = request.get("source")
        if source is None:
            return None
        if hashlib.sha256(source.encode()).hexdigest() != sha:
            raise InvalidPolicy("the policy code does not match its sha256")
        policy = load_policy(compile_policy(source))
        self._cache[sha] = policy
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return policy

    def _run(self, request: dict, policy: PolicyContract) -> Any:
        op = request["op"]
        if op == "check":
            return {"management": policy.has_management}
        common = {
            "rule_id": request.get("rule_id", ""),
            "settings": request.get("settings") or {},
            "parameters": request.get("parameters") or {},
        }
        if op == "eval":
            return evaluate(
                policy,
                input_data=request.get("input_data"),
                context=request.get("context") or {},
                **common,
            )
        if op == "manage":
            return manage(policy, action=request["action"], data=request.get("data"), **common)
        raise ValueError(f"unknown op {op!r}")

    def handle(self, request: dict) -> bytes:
        started = time.perf_counter()
        limits = CallLimits(self._baseline, request["memory_mb"], request["timeout"])
        try:
            with limits:
                policy = self._policy(request)
                if policy is None:
                    return protocol.encode({"need_source": True})
                result = self._run(request, policy)
                try:
                    return protocol.encode(
                        {
                            "ok": True,
                            "result": result,
                            "worker_ms": (time.perf_counter() - started) * 1000,
                        }
                    )
                except (TypeError, ValueError, RecursionError) as exc:
                    raise InvalidOutput(f"the policy's result is not JSON: {exc}") from None
        except PolicyRuntimeError as exc:
            return protocol.encode({"ok": False, "error": exc.to_dict()})
        except MemoryError:
            return protocol.encode(
                {"ok": False, "error": {"type": "MemoryLimit", "message": "out of memory"}}
            )
        except CpuTimeExceeded:
            return protocol.encode(
                {"ok": False, "error": {"type": "Timeout", "message": "CPU time limit reached"}}
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="policy sandbox worker (started by the pool)")
    parser.add_argument("--max-memory-mb", type=int, required=True)
    args = parser.parse_args(argv)

    # The protocol owns the real stdout; anything else that writes to fd 1 goes nowhere.
    out_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(os.devnull, "w")

    for name in _PRELOAD:
        __import__(name)
    signal.signal(signal.SIGXCPU, _on_sigxcpu)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when workers stop
    baseline = apply_process_limits(args.max_memory_mb)
    worker = Worker(baseline)
    try:
        protocol.write_frame(out_fd, protocol.encode({"ready": True, "pid": os.getpid()}))
        while True:
            payload = protocol.read_frame(0)
            if payload is None:  # the parent closed the pipe or died
                return 0
            protocol.write_frame(out_fd, worker.handle(protocol.decode(payload)))
    except BrokenPipeError:  # the parent went away while we answered: nothing to report
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
