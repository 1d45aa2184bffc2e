"""Decision latency of one example policy, four ways, on this machine.

(a) a plain CPython call of the policy class, (b) the same call through the
RestrictedPython sandbox in-process, (c) a decision through the warm worker pool,
(d) a bare pipe round trip to another process carrying the same JSON payload; and (b2),
(b) with the isolation defences a worker runs with (see sandbox/isolation.py).
Prints p50/p99 of each and the ratios b/a (sandbox cost) and c/d (pool cost over raw IPC).
Targets: b/a <= 3, c/d <= 1.5, p99 of (c) <= 1 ms.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys

from common import example_policy, percentiles, time_calls, time_interleaved, verdict
from policy_runtime.sandbox import isolation, protocol
from policy_runtime.sandbox.builtins import POLICY_BUILTINS
from policy_runtime.sandbox.compiler import compile_policy
from policy_runtime.sandbox.executor import evaluate, load_policy
from policy_runtime.sandbox.modules import exposed_objects
from policy_runtime.sandbox.pool import PolicyCall, WorkerPool

# The echo peer of (d): decode each frame and send it back encoded, as a worker does.
_ECHO = """
import sys
from policy_runtime.sandbox import protocol
while True:
    payload = protocol.read_frame(0)
    if payload is None:
        break
    protocol.write_frame(1, protocol.encode(protocol.decode(payload)))
"""


def plain_call(document: dict, case: dict):
    namespace: dict = {}
    exec(compile(document["code"], "<plain>", "exec"), namespace)  # noqa: S102 - trusted sample
    cls = namespace["AIOSv1PolicyRule"]
    parameters = document["policy_parameters"]

    def call():
        return cls("uri", {}, parameters).eval(parameters, case["input_data"], {})

    return call


def restricted_call(document: dict, case: dict):
    policy = load_policy(compile_policy(document["code"]))
    parameters = document["policy_parameters"]

    def call():
        return evaluate(
            policy, rule_id="uri", settings={}, parameters=parameters,
            input_data=case["input_data"], context={},
        )

    return call


def pool_call(pool: WorkerPool, document: dict, case: dict):
    request = PolicyCall(
        op="eval", source=document["code"], timeout_seconds=2, memory_mb=256, rule_id="uri",
        parameters=document["policy_parameters"], input_data=case["input_data"],
    )
    return lambda: pool.call(request)


def pipe_call(proc: subprocess.Popen, document: dict, case: dict):
    # The same message the pool sends for a cached policy, and an answer of the same size.
    message = {
        "op": "eval", "sha": "0" * 64, "source": None, "timeout": 2, "memory_mb": 256,
        "rule_id": "uri", "settings": {}, "parameters": document["policy_parameters"],
        "input_data": case["input_data"], "context": {}, "action": "", "data": None,
    }
    write_fd, read_fd = proc.stdin.fileno(), proc.stdout.fileno()

    def call():
        protocol.write_frame(write_fd, protocol.encode(message))
        return protocol.decode(protocol.read_frame(read_fd))

    return call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args()
    document, case = example_policy()
    expected = case["expected"]
    results: dict[str, tuple[float, float]] = {}

    plain = plain_call(document, case)
    restricted = restricted_call(document, case)
    assert plain() == expected and restricted() == expected, "the policy misbehaves"
    print(f"policy: {document['name']}  iterations: {args.iterations}  cpus: {os.cpu_count()}")
    print("measuring (a) plain CPython call and (b) in-process restricted call ...", flush=True)
    samples = time_interleaved({"a": plain, "b": restricted}, args.iterations)
    results.update({key: percentiles(values) for key, values in samples.items()})

    with WorkerPool(1, max_memory_mb=1024) as pool:
        decide = pool_call(pool, document, case)
        assert decide() == expected
        print("measuring (c) decision through the warm worker pool ...", flush=True)
        results["c"] = percentiles(time_calls(decide, args.iterations))

    echo = subprocess.Popen(
        [sys.executable, "-I", "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        print("measuring (d) bare pipe round trip ...", flush=True)
        results["d"] = percentiles(time_calls(pipe_call(echo, document, case), args.iterations))
    finally:
        echo.stdin.close()
        echo.wait()

    # (b) again with the worker's isolation defences armed (shared-state watch, collector
    # off, each call collecting its own garbage): their per-decision cost is b2 - b.
    print("measuring (b2) in-process restricted call with worker isolation ...", flush=True)
    isolation.arm([*exposed_objects(), *POLICY_BUILTINS.values()])
    try:
        results["b2"] = percentiles(time_calls(restricted, args.iterations))
    finally:
        isolation.watch = None
        gc.enable()

    labels = {
        "a": "plain CPython call",
        "b": "restricted, in-process",
        "b2": "b + worker isolation",
        "c": "worker pool decision",
        "d": "bare pipe round trip",
    }
    print(f"\n{'':4}{'':26}{'p50 us':>10}{'p99 us':>10}")
    for key, label in labels.items():
        p50, p99 = results[key]
        print(f"({key}) {label:{27 - len(key)}}{p50:10.1f}{p99:10.1f}")
    b_over_a = results["b"][0] / results["a"][0]
    c_over_d = results["c"][0] / results["d"][0]
    c_p99_ms = results["c"][1] / 1000
    print()
    print(f"b/a (p50)    = {b_over_a:5.2f}   target <= 3     {verdict(b_over_a, 3)}")
    print(f"c/d (p50)    = {c_over_d:5.2f}   target <= 1.5   {verdict(c_over_d, 1.5)}")
    print(f"p99 of (c)   = {c_p99_ms:5.3f} ms target <= 1 ms  {verdict(c_p99_ms, 1)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
