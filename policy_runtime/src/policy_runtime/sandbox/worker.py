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
import types
from collections import OrderedDict
from typing import Any

from policy_runtime.errors import InvalidOutput, InvalidPolicy, PolicyRuntimeError
from policy_runtime.sandbox import capture, isolation, protocol
from policy_runtime.sandbox.builtins import POLICY_BUILTINS
from policy_runtime.sandbox.compiler import PolicyContract, compile_policy
from policy_runtime.sandbox.executor import (
    CpuTimeExceeded,
    evaluate_keeping_context,
    finish_call,
    load_policy,
    manage,
)
from policy_runtime.sandbox.limits import (
    MIB,
    RETAINED_LIMIT_MB,
    AddressSpace,
    CallLimits,
    apply_process_limits,
)
from policy_runtime.sandbox.modules import exposed_objects
from policy_runtime.sandbox.output import safe_text

CACHE_SIZE = 128
# Errors after which the pool replaces the worker (the pool's _RECYCLE_AFTER).
_REPLACED_AFTER = ("Timeout", "MemoryLimit")

# Modules the allowed API imports lazily; importing them now keeps file access and
# import machinery out of evaluations.
_PRELOAD = ("_strptime", "time", "encodings.idna", "json.decoder", "json.encoder", "decimal")


def _on_sigxcpu(signum: int, frame: object) -> None:
    raise CpuTimeExceeded()


class Worker:
    """The request loop of one worker process."""

    def __init__(self, baseline: int) -> None:
        self._baseline = baseline
        self._size = baseline  # the address space after the last call
        self._memory = AddressSpace()
        self._code: OrderedDict[str, types.CodeType] = OrderedDict()  # by sha256
        self._cache: OrderedDict[str, PolicyContract] = OrderedDict()  # by sha, URI, scope
        self._kept_context: Any = None  # the context an eval left, when it is kept
        # Set by handle(): the last call left this worker to be replaced, so it runs no
        # more calls of its batch (the pool runs them on the next worker).
        self.stop = False

    def _policy(self, request: dict) -> PolicyContract | None:
        """The policy's module, executed once per policy URI and cluster (its scope).

        Module-level state of a policy (a list it appends to) is never shared between two
        URIs with the same code or two clusters of one URI: it could carry one cluster's
        data into another's decision. The compiled code is shared by all.
        """
        sha = request["sha"]
        key = f"{sha}\x00{request.get('rule_id', '')}\x00{request.get('scope', '')}"
        policy = self._cache.get(key)
        if policy is not None:
            self._cache.move_to_end(key)
            return policy
        code = self._code.get(sha)
        if code is None:
            source = request.get("source")
            if source is None:
                return None
            if hashlib.sha256(source.encode()).hexdigest() != sha:
                raise InvalidPolicy("the policy code does not match its sha256")
            code = compile_policy(source)
            self._code[sha] = code
            if len(self._code) > CACHE_SIZE:
                self._code.popitem(last=False)
        else:
            self._code.move_to_end(sha)
        policy = load_policy(code)
        self._cache[key] = policy
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return policy

    def _run(self, request: dict, policy: PolicyContract) -> Any:
        op = request["op"]
        if op == "check":
            return {"management": policy.has_management}
        # What the policy can reach is taken out of the request, so that it is garbage as
        # soon as the call returns and is collected inside the call (see _answer).
        common = {
            "rule_id": request.get("rule_id", ""),
            "settings": request.pop("settings", None) or {},
            "parameters": request.pop("parameters", None) or {},
        }
        if op == "eval":
            result, context = evaluate_keeping_context(
                policy,
                input_data=request.pop("input_data", None),
                context=request.pop("context", None) or {},
                keep_context=bool(request.get("keep_context")),
                **common,
            )
            if request.get("keep_context"):
                self._kept_context = context
            return result
        if op == "manage":
            data = request.pop("data", None)
            return manage(policy, action=request["action"], data=data, **common)
        raise ValueError(f"unknown op {op!r}")

    def handle(self, request: dict) -> bytes:
        """The encoded answer to one request; never raises for anything a policy does."""
        started = time.perf_counter()
        capture.begin()
        self._kept_context = None
        try:
            answer = self._answer(request, started)
        except BaseException as exc:  # the last line of defence
            answer = {"ok": False, "error": _internal_error(exc)}
        # What the policy printed and logged comes back with its answer, also on failure.
        if not answer.get("need_source"):
            answer["output"] = capture.collected()
        if answer.get("ok") and request.get("keep_context"):
            answer["context"] = self._kept_context
        recycle = self._retained_too_much() or isolation.tainted
        if recycle:
            answer["recycle"] = True
        error = answer.get("error")
        self.stop = recycle or (
            isinstance(error, dict) and error.get("type") in _REPLACED_AFTER
        )
        try:
            return _encode_answer(answer)
        except MemoryError:  # encoding a large result: the worker's own ceiling
            self.stop = True
            answer = {
                "ok": False,
                "recycle": True,
                "error": {"type": "MemoryLimit", "message": "out of memory encoding the result"},
            }
            return protocol.encode(answer)
        except (protocol.UnencodableMessage, RecursionError):  # not for plain values
            return protocol.encode(
                {"ok": False, "recycle": recycle, "error": _internal_error(None)}
            )

    def _answer(self, request: dict, started: float) -> dict:
        limits = CallLimits(self._size, request["memory_mb"], request["timeout"])
        try:
            with limits:
                policy = self._policy(request)
                if policy is None:
                    return {"need_source": True}
                answer = self._call(request, policy, started)
                # What the policy left in its inputs (a generator with a finally block in a
                # reference cycle, say) is garbage only now: collect it inside this call's
                # limits and output, never in the next call's.
                error = finish_call(None)
                if error is not None and answer.get("ok"):
                    return {"ok": False, "error": error.to_dict()}
                return answer
        except PolicyRuntimeError as exc:
            return {"ok": False, "error": exc.to_dict()}
        except MemoryError:
            return {"ok": False, "error": {"type": "MemoryLimit", "message": "out of memory"}}
        except CpuTimeExceeded:
            return {
                "ok": False,
                "error": {"type": "Timeout", "message": "CPU time limit reached"},
            }

    def _call(self, request: dict, policy: PolicyContract, started: float) -> dict:
        # The policy's error is answered here, so that its traceback (and the frames that
        # hold the call's inputs) is gone before _answer collects what the call left.
        try:
            result = self._run(request, policy)
        except PolicyRuntimeError as exc:
            return {"ok": False, "error": exc.to_dict()}
        return {"ok": True, "result": result, "worker_ms": (time.perf_counter() - started) * 1000}

    def _retained_too_much(self) -> bool:
        """Measure what stays allocated after the call; True above RETAINED_LIMIT_MB."""
        self._size = self._memory.current()
        return self._size - self._baseline > RETAINED_LIMIT_MB * MIB


def _internal_error(exc: BaseException | None) -> dict:
    kind = type(exc).__name__ if exc is not None else "an unencodable answer"
    return {
        "type": "PolicyError",
        "message": f"the sandbox could not complete the call ({kind}); the policy's result "
        "was discarded",
    }


def _encode_answer(answer: dict) -> bytes:
    """``answer`` as a frame payload: errors made encodable, results checked for size."""
    if "error" in answer:
        error = answer["error"]
        answer["error"] = {
            "type": safe_text(str(error.get("type", "PolicyError"))),
            "message": safe_text(str(error.get("message", ""))),
        }
        return protocol.encode(answer)
    try:
        payload = protocol.encode(answer)
    except protocol.UnencodableMessage as exc:
        return _encode_answer(
            {**_without_result(answer), "error": _invalid_output(
                f"the policy's result is not JSON: {exc}")}
        )
    if len(payload) > protocol.MAX_FRAME_BYTES:
        return _encode_answer(
            {**_without_result(answer), "error": _invalid_output(
                f"the policy's result is {len(payload)} bytes of JSON, over the limit of "
                f"{protocol.MAX_FRAME_BYTES} bytes")}
        )
    return payload


def _without_result(answer: dict) -> dict:
    dropped = ("result", "worker_ms", "ok", "context")
    return {k: v for k, v in answer.items() if k not in dropped} | {"ok": False}


def _invalid_output(message: str) -> dict:
    return InvalidOutput(message).to_dict()


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
    # From here on no automatic garbage collection: each call collects its own garbage.
    isolation.arm([*exposed_objects(), *POLICY_BUILTINS.values()])
    baseline = apply_process_limits(args.max_memory_mb)
    worker = Worker(baseline)
    try:
        protocol.write_frame(out_fd, protocol.encode({"ready": True, "pid": os.getpid()}))
        while True:
            payload = protocol.read_frame(0)
            if payload is None:  # the parent closed the pipe or died
                return 0
            request = protocol.decode(payload)
            # A batch: the calls that waited for this worker, run in order and each
            # answered in a frame of its own as soon as it has run.
            requests = request["batch"] if "batch" in request else [request]
            for item in requests:
                protocol.write_frame(out_fd, worker.handle(item))
                if isolation.tainted:  # the pool replaces this worker; serve no one else
                    return 0
                if worker.stop:  # the rest of the batch waits for the next worker
                    break
    except BrokenPipeError:  # the parent went away while we answered: nothing to report
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
