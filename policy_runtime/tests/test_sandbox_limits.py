"""Resource exhaustion: each attack ends in a typed error and the pool keeps serving."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from policy_sources import ALLOW_ALL, eval_body

from policy_runtime.errors import PolicyError, Timeout
from policy_runtime.evaluation import LimitsConfig, PolicyEvaluator
from policy_runtime.sandbox.pool import PolicyCall, PoolBusy, PoolClosed, WorkerPool

FAST = {"timeout_seconds": 0.5, "memory_mb": 128}

EXHAUSTION = [
    ("infinite-loop", "while True:\n    pass", "Timeout"),
    ("itertools-count", "import itertools\nreturn sum(itertools.count())", "Timeout"),
    ("huge-power", "return 10**10**8", "Timeout"),
    ("redos", "import re\nreturn bool(re.match('(a+)+$', 'a' * 40 + 'b'))", "Timeout"),
    ("string-bomb", "return len('a' * (4 * 1024**3))", "MemoryLimit"),
    ("list-growth", "x = []\nwhile True:\n    x.append([0] * 100000)", "MemoryLimit"),
    ("dict-bomb", "return len({i: i for i in range(10**9)})", "MemoryLimit"),
    ("deep-recursion", "def f(n):\n    return f(n + 1)\nreturn f(0)", "PolicyError"),
    ("mutual-recursion", "def a(n):\n    return b(n)\ndef b(n):\n    return a(n)\nreturn a(0)",
     "PolicyError"),
]


@pytest.mark.parametrize(
    ("body", "error_type"),
    [pytest.param(body, error, id=name) for name, body, error in EXHAUSTION],
)
def test_exhaustion_ends_in_typed_error_and_pool_keeps_serving(
    evaluator: PolicyEvaluator, body: str, error_type: str
) -> None:
    outcome = evaluator.evaluate({"code": eval_body(body)}, {}, settings=FAST)
    assert outcome.error_type == error_type, outcome.error
    after = evaluator.evaluate({"code": ALLOW_ALL}, {"x": 1})
    assert after.ok and after.result == {"allowed": True, "input_data": {"x": 1}}


def test_recursion_error_names_the_line(evaluator: PolicyEvaluator) -> None:
    outcome = evaluator.evaluate(
        {"code": eval_body("def f(n):\n    return f(n + 1)\nreturn f(0)")}, {}
    )
    assert outcome.error["message"].startswith("RecursionError: maximum recursion depth")
    assert "(line " in outcome.error["message"]


def test_timeout_replaces_the_worker(evaluator: PolicyEvaluator, pool: WorkerPool) -> None:
    before = set(pool.worker_pids())
    outcome = evaluator.evaluate({"code": eval_body("while True:\n    pass")}, {}, settings=FAST)
    assert outcome.error == {
        "type": "Timeout",
        "message": "the policy did not finish within 0.5 s and was stopped",
    }
    deadline = time.monotonic() + 30
    while len(pool.worker_pids()) < pool.size and time.monotonic() < deadline:
        time.sleep(0.05)
    after = set(pool.worker_pids())
    assert len(after) == pool.size
    assert len(before - after) == 1, "exactly the overrunning worker is replaced"


def test_settings_cannot_exceed_the_service_caps(pool: WorkerPool) -> None:
    capped = PolicyEvaluator(pool, LimitsConfig(max_timeout_seconds=0.3, max_memory_mb=128))
    outcome = capped.evaluate(
        {"code": eval_body("while True:\n    pass")},
        {},
        settings={"timeout_seconds": 600, "memory_mb": 100000},
    )
    assert outcome.error["message"] == "the policy did not finish within 0.3 s and was stopped"
    bomb = capped.evaluate(
        {"code": eval_body("return len('a' * (512 * 1024**2))")},
        {},
        settings={"memory_mb": 100000},
    )
    assert bomb.error_type == "MemoryLimit"


@pytest.mark.parametrize("bad", [0, -1, "2", True, None])
def test_invalid_limit_settings_are_rejected(evaluator: PolicyEvaluator, bad: object) -> None:
    outcome = evaluator.evaluate({"code": ALLOW_ALL}, {}, settings={"timeout_seconds": bad})
    assert outcome.error_type == "InvalidInput"
    assert "settings.timeout_seconds must be a positive number" in outcome.error["message"]


def test_killed_worker_is_reported_and_replaced() -> None:
    with WorkerPool(1, max_memory_mb=256) as pool:
        (victim,) = pool.worker_pids()
        threading.Timer(0.3, os.kill, (victim, signal.SIGKILL)).start()
        call = PolicyCall(
            op="eval", source=eval_body("while True:\n    pass"), timeout_seconds=5, memory_mb=64
        )
        with pytest.raises(PolicyError, match="stopped unexpectedly"):
            pool.call(call)
        ok = PolicyCall(op="eval", source=ALLOW_ALL, timeout_seconds=5, memory_mb=64)
        assert pool.call(ok) == {"allowed": True, "input_data": None}
        assert pool.worker_pids() != [victim]


def test_busy_pool_answers_pool_busy_instead_of_waiting_forever() -> None:
    with WorkerPool(1, max_memory_mb=256, queue_timeout_seconds=0.2) as pool:
        slow = PolicyCall(
            op="eval", source=eval_body("while True:\n    pass"), timeout_seconds=1, memory_mb=64
        )
        def occupy() -> None:
            with pytest.raises(Timeout):
                pool.call(slow)

        runner = threading.Thread(target=occupy)
        runner.start()
        time.sleep(0.1)
        with pytest.raises(PoolBusy, match="AIOS_POOL_SIZE"):
            pool.call(PolicyCall(op="eval", source=ALLOW_ALL, timeout_seconds=1, memory_mb=64))
        runner.join()


def test_concurrent_callers_all_get_their_own_answer(evaluator: PolicyEvaluator) -> None:
    source = eval_body("return {'n': input_data['n'] * 2}")
    results: dict[int, object] = {}

    def call(n: int) -> None:
        results[n] = evaluator.evaluate({"code": source}, {"n": n}).result

    threads = [threading.Thread(target=call, args=(n,)) for n in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {n: {"n": n * 2} for n in range(40)}


def test_workers_hold_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOS_API_TOKEN", "secret-token-value")
    monkeypatch.setenv("AIOS_MONGO_URI", "mongodb://user:password@db/")
    with WorkerPool(1, max_memory_mb=256) as pool:
        (pid,) = pool.worker_pids()
        with open(f"/proc/{pid}/environ", "rb") as environ:
            names = {item.split(b"=", 1)[0] for item in environ.read().split(b"\0") if item}
    assert not {name for name in names if name.startswith(b"AIOS_")}


def test_closed_pool_refuses_calls() -> None:
    pool = WorkerPool(1, max_memory_mb=256).start()
    pool.close()
    with pytest.raises(PoolClosed):
        pool.call(PolicyCall(op="eval", source=ALLOW_ALL, timeout_seconds=1, memory_mb=64))
