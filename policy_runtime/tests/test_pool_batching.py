"""Calls that wait for a worker travel to it together: each still runs under its own
limits, and a timeout, memory overrun or crash fails that call alone; the calls of the
same batch that had not run yet run on the next worker. All of it holds both when the
pool's threads carry the calls and when an event loop drives the workers (as in the HTTP
service)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from policy_sources import ALLOW_ALL, eval_body

from policy_runtime.errors import InvalidInput, MemoryLimit, PolicyError, Timeout
from policy_runtime.sandbox.pool import CallAnswer, PolicyCall, PoolClosed, WorkerPool

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


@contextlib.contextmanager
def _loop_in_a_thread() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(params=["worker threads", "event loop"])
def pool(request: pytest.FixtureRequest) -> Iterator[WorkerPool]:
    with contextlib.ExitStack() as stack:
        loop = stack.enter_context(_loop_in_a_thread()) if request.param == "event loop" else None
        pool = stack.enter_context(WorkerPool(1, max_memory_mb=256))  # closed before the loop
        if loop is not None:
            pool.drive_from(loop)
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
    # The calls before the offender allow a minute: its own, shorter limit still holds.
    calls = [_call(DOUBLE, {"n": 1}, timeout=60), _call(DOUBLE, {"n": 2}, timeout=60),
             offender, _call(DOUBLE, {"n": 3}), _call(DOUBLE, {"n": 4})]
    frames_before, _ = pool.batch_stats()
    started = time.monotonic()
    results = _queued_behind_a_hold(pool, calls)
    assert time.monotonic() - started < 30, "the offender was stopped at its own limit"
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


def _nested(depth: int) -> object:
    value: object = 0
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("unencodable", "reason"),
    [
        (_call(DOUBLE, {"n": float("nan")}), "Out of range float"),
        (_call(DOUBLE, _nested(100_000)), "nested too deeply"),
        (_call(DOUBLE + "# \ud800\n", {"n": 1}), "surrogates not allowed"),
    ],
    ids=["nan", "nesting", "code-not-text"],
)
def test_an_unencodable_call_in_a_batch_fails_alone(
    pool: WorkerPool, unencodable: PolicyCall, reason: str
) -> None:
    calls = [_call(DOUBLE, {"n": 1}), unencodable, _call(DOUBLE, {"n": 2})]
    (before,) = pool.worker_pids()
    results = _queued_behind_a_hold(pool, calls)
    assert isinstance(results[1], InvalidInput), results[1]
    assert reason in str(results[1])
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


def test_a_loop_that_drives_the_pool_batches_its_callers_and_survives_faults() -> None:
    async def main(pool: WorkerPool) -> list[object]:
        pool.drive_from(asyncio.get_running_loop())
        results = await asyncio.gather(
            *(pool.acall(_call(DOUBLE, {"n": n})) for n in range(200)),
            pool.acall(_call(SPIN, timeout=0.3)),
            pool.acall(_call(BOMB)),
            *(pool.acall(_call(DOUBLE, {"n": n})) for n in range(200, 300)),
            return_exceptions=True,
        )
        deadline = time.monotonic() + 30
        while len(pool.worker_pids()) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # a replacement may still be starting
        return results

    with WorkerPool(2, max_memory_mb=256) as pool:
        before = pool.worker_pids()
        results = asyncio.run(main(pool))
        frames, calls = pool.batch_stats()
        after = pool.worker_pids()
    doubled = [*results[:200], *results[202:]]
    assert doubled == [{"n": n * 2} for n in range(300)]
    assert isinstance(results[200], Timeout) and isinstance(results[201], MemoryLimit)
    assert frames < calls, "waiting calls shared frames"
    assert len(after) == 2 and not set(before) & set(after), "both offenders' workers replaced"


def test_a_frame_too_large_to_write_from_the_loop_still_arrives() -> None:
    echo = eval_body("return len(input_data)")

    async def main(pool: WorkerPool) -> list[object]:
        pool.drive_from(asyncio.get_running_loop())
        sizes = [10, 200_000, 20, 3_000_000]
        return await asyncio.gather(*(pool.acall(_call(echo, "x" * n)) for n in sizes))

    with WorkerPool(1, max_memory_mb=256) as pool:
        assert asyncio.run(main(pool)) == [10, 200_000, 20, 3_000_000]


def test_the_driving_loop_may_not_block_on_the_pool() -> None:
    async def main(pool: WorkerPool) -> object:
        pool.drive_from(asyncio.get_running_loop())
        with pytest.raises(RuntimeError, match="use acall"):
            pool.call(_call(DOUBLE, {"n": 1}))  # would wait for an answer only it can read
        return await pool.acall(_call(DOUBLE, {"n": 1}))

    with WorkerPool(1, max_memory_mb=256) as pool:
        assert asyncio.run(main(pool)) == {"n": 2}


@pytest.mark.parametrize("loop_state", ["running", "stopped"])
def test_closing_a_loop_driven_pool_fails_the_calls_it_was_running(loop_state: str) -> None:
    with _loop_in_a_thread() as loop:
        pool = WorkerPool(1, max_memory_mb=256).start()
        pool.drive_from(loop)
        results: list[object] = [None, None]

        def run(index: int, call: PolicyCall) -> None:
            try:
                results[index] = pool.call(call)
            except Exception as exc:
                results[index] = exc

        spinning = threading.Thread(target=run, args=(0, _call(SPIN, timeout=30)))
        queued = threading.Thread(target=run, args=(1, _call(DOUBLE, {"n": 1})))
        spinning.start()
        time.sleep(0.5)  # the spin is running
        queued.start()  # and this call waits behind it
        time.sleep(0.2)
        (worker,) = pool.worker_pids()
        if loop_state == "stopped":  # the service's loop ended before the pool was closed
            loop.call_soon_threadsafe(loop.stop)
            time.sleep(0.2)
        started = time.monotonic()
        pool.close()
        for thread in (spinning, queued):
            thread.join(timeout=10)
        assert all(isinstance(result, PoolClosed) for result in results), results
        assert time.monotonic() - started < 5, "closing does not wait out the spin"
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
