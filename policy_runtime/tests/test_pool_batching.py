"""Calls that wait for a worker travel to it together: each still runs under its own
limits, and a timeout, memory overrun or crash fails that call alone; the calls of the
same batch that had not run yet run on the next worker."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest
from policy_sources import ALLOW_ALL, eval_body

from policy_runtime.errors import InvalidInput, MemoryLimit, PolicyError, Timeout
from policy_runtime.sandbox.pool import CallAnswer, PolicyCall, WorkerPool

# Holds its worker for ``input_data["hold"]`` seconds of wall-clock time.
HOLD = eval_body(
    """
    import datetime
    end = datetime.datetime.now() + datetime.timedelta(seconds=input_data["hold"])
    while datetime.datetime.now() < end:
        pass
    return {"held": True}
    """
)
DOUBLE = eval_body('return {"n": input_data["n"] * 2}')
SPIN = eval_body("while True:\n    pass")
BOMB = eval_body("x = []\nwhile True:\n    x.append([0] * 100000)")


def _call(source: str, input_data: object = None, timeout: float = 5) -> PolicyCall:
    return PolicyCall(
        op="eval", source=source, timeout_seconds=timeout, memory_mb=128, input_data=input_data
    )


def _queued_behind_a_hold(pool: WorkerPool, calls: list[PolicyCall]) -> list[object]:
    """Run ``calls`` from threads, queued in order while the only worker is held, so
    that they reach it in one batch; each caller's answer or error."""
    results: list[object] = [None] * (len(calls) + 1)  # the hold's last

    def run(index: int, call: PolicyCall) -> None:
        try:
            results[index] = pool.call_answer(call)
        except Exception as exc:
            results[index] = exc

    holder = threading.Thread(target=run, args=(len(calls), _call(HOLD, {"hold": 1.0})))
    holder.start()
    time.sleep(0.3)  # the hold is running
    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
        time.sleep(0.02)  # queued in this order
    for thread in [holder, *threads]:
        thread.join(timeout=60)
    assert results[-1] == CallAnswer({"held": True}, {"printed": "", "logs": []}), results[-1]
    return results[:-1]


def _doubled(result: object, n: int) -> bool:
    return isinstance(result, CallAnswer) and result.result == {"n": n * 2}


@pytest.fixture
def pool():
    with WorkerPool(1, max_memory_mb=256) as pool:
        pool.call(_call(DOUBLE, {"n": 0}))  # warm
        yield pool


def test_calls_waiting_for_the_worker_travel_in_one_batch(pool: WorkerPool) -> None:
    frames_before, calls_before = pool.batch_stats()
    results = _queued_behind_a_hold(pool, [_call(DOUBLE, {"n": n}) for n in range(6)])
    assert all(_doubled(result, n) for n, result in enumerate(results)), results
    frames, calls = pool.batch_stats()
    assert calls - calls_before == 7  # the hold and the six
    assert frames - frames_before == 2, "the six waited together and went in one frame"


@pytest.mark.parametrize(
    ("offender", "error_type", "message"),
    [
        (_call(SPIN, timeout=0.5), Timeout, "did not finish within 0.5 s"),
        (_call(BOMB), MemoryLimit, ""),
    ],
    ids=["timeout", "memory"],
)
def test_an_overrun_mid_batch_fails_that_call_alone(
    pool: WorkerPool, offender: PolicyCall, error_type: type, message: str
) -> None:
    (before,) = pool.worker_pids()
    calls = [_call(DOUBLE, {"n": 1}), _call(DOUBLE, {"n": 2}), offender,
             _call(DOUBLE, {"n": 3}), _call(DOUBLE, {"n": 4})]
    frames_before, _ = pool.batch_stats()
    results = _queued_behind_a_hold(pool, calls)
    assert isinstance(results[2], error_type), results[2]
    assert message in str(results[2])
    for index, n in ((0, 1), (1, 2), (3, 3), (4, 4)):
        assert _doubled(results[index], n), (index, results[index])
    frames, _ = pool.batch_stats()
    assert frames - frames_before == 3, "the calls after the overrun ran on the next worker"
    assert before not in pool.worker_pids()


def test_a_worker_killed_mid_batch_fails_the_call_it_was_running_only(
    pool: WorkerPool,
) -> None:
    (victim,) = pool.worker_pids()
    calls = [_call(DOUBLE, {"n": 1}), _call(SPIN, timeout=20), _call(DOUBLE, {"n": 2}),
             _call(ALLOW_ALL, "after")]
    # The hold ends after 1 s; the spin runs from then on.
    threading.Timer(2.0, os.kill, (victim, signal.SIGKILL)).start()
    started = time.monotonic()
    results = _queued_behind_a_hold(pool, calls)
    assert time.monotonic() - started < 15, "the crash is reported, not waited out"
    assert isinstance(results[1], PolicyError), results[1]
    assert "stopped unexpectedly" in str(results[1])
    assert _doubled(results[0], 1) and _doubled(results[2], 2)
    assert isinstance(results[3], CallAnswer)
    assert results[3].result == {"allowed": True, "input_data": "after"}
    assert victim not in pool.worker_pids()


def test_an_unencodable_call_in_a_batch_fails_alone(pool: WorkerPool) -> None:
    calls = [_call(DOUBLE, {"n": 1}), _call(DOUBLE, {"n": float("nan")}),
             _call(DOUBLE, {"n": 2})]
    (before,) = pool.worker_pids()
    results = _queued_behind_a_hold(pool, calls)
    assert isinstance(results[1], InvalidInput), results[1]
    assert _doubled(results[0], 1) and _doubled(results[2], 2)
    assert pool.worker_pids() == [before], "nothing reached the worker: it is kept"


def test_a_policy_error_mid_batch_keeps_the_worker_and_the_batch(pool: WorkerPool) -> None:
    failing = _call(eval_body("return 1 / 0"))
    calls = [_call(DOUBLE, {"n": 1}), failing, _call(DOUBLE, {"n": 2})]
    (before,) = pool.worker_pids()
    frames_before, _ = pool.batch_stats()
    results = _queued_behind_a_hold(pool, calls)
    assert isinstance(results[1], PolicyError) and "ZeroDivisionError" in str(results[1])
    assert _doubled(results[0], 1) and _doubled(results[2], 2)
    assert pool.batch_stats()[0] - frames_before == 2
    assert pool.worker_pids() == [before]


def test_each_call_of_a_batch_gets_its_own_output(pool: WorkerPool) -> None:
    printing = eval_body('print("call", input_data)\nreturn input_data')
    results = _queued_behind_a_hold(pool, [_call(printing, n) for n in range(4)])
    for n, result in enumerate(results):
        assert isinstance(result, CallAnswer) and result.result == n
        assert result.output["printed"] == f"call {n}\n"


def test_concurrent_event_loop_callers_each_get_their_own_answer() -> None:
    async def main(pool: WorkerPool) -> list[object]:
        return await asyncio.gather(
            *(pool.acall(_call(DOUBLE, {"n": n})) for n in range(200)),
            pool.acall(_call(SPIN, timeout=0.3)),
            return_exceptions=True,
        )

    with WorkerPool(2, max_memory_mb=256) as pool:
        results = asyncio.run(main(pool))
        frames, calls = pool.batch_stats()
    assert results[:200] == [{"n": n * 2} for n in range(200)]
    assert isinstance(results[200], Timeout)
    assert calls >= 201 and frames < calls, "waiting calls shared frames"
