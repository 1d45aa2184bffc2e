"""Decision latency of one example policy, four ways, on this machine.

(a) a plain CPython call of the policy class, (b) the same call through the
RestrictedPython sandbox in-process, (c) a decision through the warm worker pool,
(d) a bare pipe round trip to another process carrying the same JSON payload; and (b2),
(b) with the isolation defences a worker runs with (see sandbox/isolation.py).
Prints p50/p99 of each and the ratios b/a (sandbox cost) and c/d (pool cost over raw IPC).

Then a side-by-side on the update_cluster field guard
(policies/examples/update-cluster-field-guard): (r) the same rules in Rego
(bench/update_cluster_field_guard.rego) through the regorus engine in-process, one
caller, no isolation; (p1), (p8), (p32) our worker pool with 1, 8 and 32 concurrent
callers on an event loop, as the HTTP service calls it, every decision isolated in a
worker under its own limits.
Targets: b/a <= 3, c/d <= 1.5, p99 of (c) <= 1 ms; decisions/s of the pool with
concurrent callers >= decisions/s of (r).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, example_policy, percentiles, time_calls, time_interleaved, verdict
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


GUARD_DIR = REPO / "policies" / "examples" / "update-cluster-field-guard"
GUARD_REGO = Path(__file__).resolve().parent / "update_cluster_field_guard.rego"
GUARD_QUERY = "data.aios.update_cluster_field_guard.decision"


def guard_policy() -> tuple[dict, list[dict]]:
    """The field guard's document (with code) and its cases."""
    document = json.loads((GUARD_DIR / "policy.json").read_text())
    document["code"] = (GUARD_DIR / "policy.py").read_text()
    cases = [json.loads(path.read_text()) for path in sorted(GUARD_DIR.glob("cases/*.json"))]
    return document, cases


def timed_rate(call, seconds: float) -> tuple[float, float, float]:
    """(decisions/s, p50 us, p99 us) of ``call`` run back to back for ``seconds``."""
    for _ in range(200):
        call()
    samples = []
    clock = time.perf_counter
    started = clock()
    stop_at = started + seconds
    while True:
        begun = clock()
        if begun >= stop_at:
            break
        call()
        samples.append(clock() - begun)
    elapsed = clock() - started
    return (len(samples) / elapsed, *percentiles(samples))


def regorus_side(document: dict, cases: list[dict], seconds: float):
    """(r): the Rego field guard in-process; None when opa-eval is not installed."""
    try:
        from opa_eval import OpaEval  # bench-only: `make bench` installs it
    except ImportError:
        return None
    engine = OpaEval(
        str(GUARD_REGO), data_json=json.dumps({"parameters": document["policy_parameters"]}),
        query=GUARD_QUERY,
    )
    for case in cases:
        got = engine.evaluate_parsed(json.dumps(case["input_data"]))
        assert got == case["expected"], f"the Rego guard misbehaves: {got}"
    # As a service would: the input arrives as JSON text and is encoded per decision.
    input_data = cases[0]["input_data"]
    return timed_rate(lambda: engine.evaluate_parsed(json.dumps(input_data)), seconds)


async def _pool_callers(pool: WorkerPool, request: PolicyCall, callers: int, seconds: float):
    samples: list[float] = []
    clock = time.perf_counter

    async def caller(stop_at: float, keep: list[float] | None) -> None:
        while True:
            begun = clock()
            if begun >= stop_at:
                return
            await pool.acall(request)
            if keep is not None:
                keep.append(clock() - begun)

    await asyncio.gather(*(caller(clock() + 0.5, None) for _ in range(callers)))  # warm-up
    started = clock()
    await asyncio.gather(*(caller(started + seconds, samples) for _ in range(callers)))
    elapsed = clock() - started
    return (len(samples) / elapsed, *percentiles(samples))


def pool_side(document: dict, cases: list[dict], pool_size: int, seconds: float) -> dict:
    """(p1), (p8), (p32): the Python field guard through the pool, N callers at a time."""
    return asyncio.run(_pool_phases(document, cases, pool_size, seconds))


async def _pool_phases(document: dict, cases: list[dict], pool_size: int, seconds: float):
    results = {}
    with WorkerPool(pool_size, max_memory_mb=1024) as pool:
        # As the HTTP service does: the loop its callers run on drives the workers.
        pool.drive_from(asyncio.get_running_loop())
        for case in cases:
            request = PolicyCall(
                op="eval", source=document["code"], timeout_seconds=2, memory_mb=256,
                rule_id="uri", parameters=document["policy_parameters"],
                input_data=case["input_data"],
            )
            assert await pool.acall(request) == case["expected"], "the policy misbehaves"
        request = PolicyCall(
            op="eval", source=document["code"], timeout_seconds=2, memory_mb=256,
            rule_id="uri", parameters=document["policy_parameters"],
            input_data=cases[0]["input_data"],
        )
        for callers in (1, 8, 32):
            print(f"measuring (p{callers}) pool with {callers} concurrent callers ...",
                  flush=True)
            frames, calls = pool.batch_stats()
            measured = await _pool_callers(pool, request, callers, seconds)
            frames_after, calls_after = pool.batch_stats()
            per_frame = (calls_after - calls) / max(1, frames_after - frames)
            results[callers] = (*measured, per_frame)
    return results


def side_by_side(args: argparse.Namespace) -> None:
    document, cases = guard_policy()
    print(f"\nside-by-side: {document['name']}  pool: {args.pool_size} workers  "
          f"phase: {args.seconds:g} s", flush=True)
    print("measuring (r) Rego through regorus, in-process ...", flush=True)
    rego = regorus_side(document, cases, args.seconds)
    pooled = pool_side(document, cases, args.pool_size, args.seconds)
    print(f"\n{'':4}{'':34}{'dec/s':>10}{'p50 us':>10}{'p99 us':>10}{'calls/frame':>13}")
    if rego is None:
        print("(r)   Rego via regorus, in-process   skipped: opa-eval is not installed "
              "(`make bench` installs it)")
    else:
        print(f"(r)   {'Rego via regorus, in-process':32}{rego[0]:10.0f}{rego[1]:10.1f}"
              f"{rego[2]:10.1f}")
    for callers, (rate, p50, p99, per_frame) in pooled.items():
        label = f"pool, {callers} caller{'s' if callers > 1 else ''}, isolated"
        key = f"(p{callers})"
        print(f"{key:6}{label:32}{rate:10.0f}{p50:10.1f}{p99:10.1f}{per_frame:13.1f}")
    print()
    best = max(rate for callers, (rate, *_rest) in pooled.items() if callers > 1)
    if rego is not None:
        print(f"pool dec/s with concurrent callers / regorus dec/s = {best / rego[0]:5.2f}   "
              f"target >= 1   {verdict(best / rego[0], 1, False)}")
    p99_ms = pooled[1][2] / 1000
    print(f"p99 of (p1)  = {p99_ms:5.3f} ms target <= 1 ms  {verdict(p99_ms, 1)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="duration of each side-by-side phase")
    parser.add_argument("--pool-size", type=int, default=os.cpu_count() or 1,
                        help="workers of the side-by-side pool")
    parser.add_argument("--only", choices=("latency", "side-by-side"),
                        help="run one of the two parts")
    args = parser.parse_args()
    if args.only != "side-by-side":
        latency(args)
    if args.only != "latency":
        side_by_side(args)
    return 0


def latency(args: argparse.Namespace) -> None:
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


if __name__ == "__main__":
    raise SystemExit(main())
