"""Isolation between the policies one worker runs: attacker first, victim second.

Every sequence runs through one real worker (a pool of size one), so the victim meets
whatever the attacker's evaluation left in the process.
"""

from __future__ import annotations

import abc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from policy_sources import ALLOW_ALL, eval_body

from policy_runtime.evaluation import LimitsConfig, PolicyEvaluator
from policy_runtime.sandbox import protocol
from policy_runtime.sandbox.isolation import SharedStateWatch
from policy_runtime.sandbox.output import MAX_RESULT_DEPTH
from policy_runtime.sandbox.pool import WorkerPool

BIG = {"memory_mb": 512, "timeout_seconds": 10}


@pytest.fixture(scope="module")
def one_worker() -> Iterator[WorkerPool]:
    with WorkerPool(1, max_memory_mb=1024, queue_timeout_seconds=60) as pool:
        yield pool


@pytest.fixture(scope="module")
def single(one_worker: WorkerPool) -> PolicyEvaluator:
    return PolicyEvaluator(one_worker, LimitsConfig(default_timeout_seconds=2.0))


def _policy(body: str, prelude: str = "") -> dict:
    return {"code": eval_body(body, prelude=prelude)}


def _line_of(source: str, text: str) -> int:
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


# -- 5. crash paths -----------------------------------------------------------------------
def test_error_message_with_a_lone_surrogate_is_typed(
    single: PolicyEvaluator, one_worker: WorkerPool
) -> None:
    pid = one_worker.worker_pids()
    outcome = single.evaluate(_policy("raise ValueError('bad \\ud800 text')"), {})
    assert outcome.error_type == "PolicyError", outcome.error
    assert "bad \\ud800 text" in outcome.error["message"]
    assert single.evaluate({"code": ALLOW_ALL}, 1).ok
    assert one_worker.worker_pids() == pid, "the worker survived"


def test_exception_whose_message_cannot_be_read_is_typed(single: PolicyEvaluator) -> None:
    # str() of an exception with two arguments is repr() of them: too deep to print.
    body = "x = []\nfor _ in range(100000):\n    x = [x]\nraise ValueError(1, x)"
    outcome = single.evaluate(_policy(body), {})
    assert outcome.error_type == "PolicyError", outcome.error
    assert "ValueError: (the exception's message could not be read)" in outcome.error["message"]


def test_result_whose_items_raise_is_read_without_running_policy_code(
    single: PolicyEvaluator, one_worker: WorkerPool
) -> None:
    pid = one_worker.worker_pids()
    body = (
        "class Sneaky(dict):\n"
        "    def items(self):\n"
        "        raise ValueError('boom')\n"
        "    def keys(self):\n"
        "        raise ValueError('boom')\n"
        "class Text(str):\n"
        "    def upper(self):\n"
        "        raise ValueError('boom')\n"
        "return Sneaky(a=[Sneaky(b=Text('x'))], c=(1, 2.5, None))"
    )
    outcome = single.evaluate(_policy(body), {})
    assert outcome.ok, outcome.error
    assert outcome.result == {"a": [{"b": "x"}], "c": [1, 2.5, None]}
    assert one_worker.worker_pids() == pid


def test_result_with_a_lone_surrogate_is_invalid_output(single: PolicyEvaluator) -> None:
    outcome = single.evaluate(_policy("return {'x': 'a\\ud800'}"), {})
    assert outcome.error_type == "InvalidOutput", outcome.error
    assert single.evaluate({"code": ALLOW_ALL}, 1).ok


def test_result_over_the_frame_limit_is_invalid_output(single: PolicyEvaluator) -> None:
    size = protocol.MAX_FRAME_BYTES + 1024 * 1024
    outcome = single.evaluate(_policy(f"return 'a' * {size}"), {}, settings=BIG)
    assert outcome.error_type == "InvalidOutput", outcome.error
    message = outcome.error["message"]
    assert f"over the limit of {protocol.MAX_FRAME_BYTES} bytes" in message
    assert "bytes of JSON" in message
    assert single.evaluate({"code": ALLOW_ALL}, 1).ok


def test_result_nested_too_deep_is_invalid_output(single: PolicyEvaluator) -> None:
    body = "x = []\nfor _ in range(970):\n    x = [x]\nreturn x"
    outcome = single.evaluate(_policy(body), {})
    assert outcome.error == {
        "type": "InvalidOutput",
        "message": f"the policy's result is nested deeper than {MAX_RESULT_DEPTH} levels",
    }
    fits = f"x = 1\nfor _ in range({MAX_RESULT_DEPTH - 1}):\n    x = {{'k': x}}\nreturn x"
    assert single.evaluate(_policy(fits), {}).ok


def test_cli_reports_an_oversized_result_as_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "p.py"
    path.write_text(eval_body(f"return 'a' * {protocol.MAX_FRAME_BYTES + 1024}"))
    done = subprocess.run(
        [sys.executable, "-m", "policy_runtime", "eval", str(path), "--memory-mb", "512"],
        capture_output=True, text=True, timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] is False and out["error"]["type"] == "InvalidOutput", out


# -- 1. shared registries -----------------------------------------------------------------
REGISTER_ATTACKS = [
    ("typing-mapping", "import typing\ntyping.Mapping.register(int)\nreturn 1",
     "import typing\nreturn isinstance(1, typing.Mapping)", False),
    ("userdict", "import collections\ncollections.UserDict.register(str)\nreturn 1",
     "import collections\nreturn isinstance('s', collections.UserDict)", False),
    ("fraction", "import fractions\nfractions.Fraction.register(float)\nreturn 1",
     "import fractions\nreturn str(fractions.Fraction(1, 3) + 0.5)", "0.8333333333333333"),
    ("own-subclass", "import collections\n"
     "class Mine(collections.UserDict):\n    pass\n"
     "getattr(Mine, 'register')(int)\nreturn 1",
     "import typing\nreturn isinstance(1, typing.Mapping)", False),
]


@pytest.mark.parametrize(
    ("attack", "check", "expected"),
    [pytest.param(a, c, e, id=name) for name, a, c, e in REGISTER_ATTACKS],
)
def test_abc_registration_is_refused_and_invisible_to_the_next_policy(
    single: PolicyEvaluator, attack: str, check: str, expected: object
) -> None:
    outcome = single.evaluate(_policy(attack), {})
    assert outcome.error_type == "SandboxViolation", outcome.error
    assert "abstract base class" in outcome.error["message"]
    victim = single.evaluate(_policy(check), {})
    assert victim.ok and victim.result == expected, victim.error


def test_shared_state_watch_sees_registration_and_changed_containers() -> None:
    # The structural defence, on its own: whatever route a future hole takes, a change
    # to ABC registries or to a reachable shared container is seen after the call.
    class Base(abc.ABC):
        @abc.abstractmethod
        def method(self) -> None: ...

    class Library:
        cache: list = []  # noqa: RUF012 - a shared mutable class attribute, on purpose

        def __init__(self, seen: dict = {}) -> None:  # noqa: B006 - on purpose
            self.seen = seen

    watch = SharedStateWatch([Library, Base])
    assert watch.changed() is None
    Library.cache.append(object())
    assert "shared list" in (watch.changed() or "")
    Library.cache.clear()
    assert watch.changed() is None
    Library().seen["k"] = 1  # a constructor's default argument, mutated
    assert "shared dict" in (watch.changed() or "")
    Library().seen.clear()
    Base.register(Library)
    assert "abstract base class" in (watch.changed() or "")


# -- 2. a data channel through a library default ------------------------------------------
_MEMO_CHANNEL = (
    "import copy\n"
    "class Memo(dict):\n"
    "    def get(self, key, default=None):\n"
    "        if isinstance(default, list):\n"
    "            self.box.append(default)\n"
    "        return default\n"
    "memo = Memo()\nmemo.box = []\n"
    "copy.deepcopy([1], memo)\n"
    "shared = memo.box[0]\n"
)


def test_deepcopy_memo_default_is_not_a_channel(single: PolicyEvaluator) -> None:
    writer = single.evaluate(
        _policy(_MEMO_CHANNEL + "shared.append(input_data)\nreturn len(shared)"), "secret"
    )
    assert writer.error_type == "SandboxViolation", writer.error
    reader = single.evaluate(_policy(_MEMO_CHANNEL + "return list(shared)"), None)
    assert reader.error_type == "SandboxViolation", reader.error
    assert "secret" not in json.dumps(reader.to_dict())
    plain = single.evaluate(
        _policy("import copy\nm = {}\nx = [[1]]\nreturn copy.deepcopy(x, m) == x"), None
    )
    assert plain.ok and plain.result is True, plain.error


# -- 3. policy code runs only inside its own evaluation -----------------------------------
_FINALLY_GEN = (
    "def spy():\n"
    "    try:\n"
    "        yield 1\n"
    "    finally:\n"
    "        getattr(1, '_' + 'payload')\n"
)


def test_a_cycle_with_a_suspended_generator_is_collected_in_its_own_evaluation(
    single: PolicyEvaluator,
) -> None:
    attack = eval_body(
        "g = spy()\nnext(g)\nbox = [g]\nbox.append(box)\nreturn 1", prelude=_FINALLY_GEN
    )
    outcome = single.evaluate({"code": attack}, {})
    # The generator's finally runs when its cycle is freed: within the attacker's call.
    assert outcome.error_type == "SandboxViolation", outcome.error
    line = _line_of(attack, "'_' + 'payload'")
    assert outcome.error["message"].endswith(f"(line {line})"), outcome.error
    victim = _policy("xs = [[i] for i in range(20000)]\nreturn len(xs)")
    for _ in range(3):
        result = single.evaluate(victim, {})
        assert result.ok and result.result == 20000, result.error


def test_objects_left_in_typing_caches_are_released_in_their_own_evaluation(
    single: PolicyEvaluator,
) -> None:
    attack = eval_body(
        "import typing\ng = spy()\nnext(g)\ntyping.Literal[g]\nreturn 1", prelude=_FINALLY_GEN
    )
    outcome = single.evaluate({"code": attack}, {})
    assert outcome.error_type == "SandboxViolation", outcome.error
    # Many different subscriptions: they would evict the attacker's entry from the cache.
    victim = _policy("import typing\nfor i in range(300):\n    typing.Literal[i]\nreturn 1")
    result = single.evaluate(victim, {})
    assert result.ok and result.result == 1, result.error


def test_objects_left_in_the_re_cache_are_released_in_their_own_evaluation(
    single: PolicyEvaluator,
) -> None:
    attack = eval_body(
        # The cache is full first: adding the pattern evicts another, its size stays.
        "import re\nclass Pat(str):\n    pass\n"
        "for i in range(600):\n    re.compile('y{%d}' % i)\n"
        "p = Pat('ab+')\np.hold = spy()\nnext(p.hold)\nre.compile(p)\nreturn 1",
        prelude=_FINALLY_GEN,
    )
    outcome = single.evaluate({"code": attack}, {})
    assert outcome.error_type == "SandboxViolation", outcome.error
    victim = _policy(
        "import re\nfor i in range(600):\n    re.compile('x{%d}' % i)\nreturn 1"
    )
    result = single.evaluate(victim, {})
    assert result.ok and result.result == 1, result.error


# -- 4. retained memory -------------------------------------------------------------------
def test_memory_a_policy_keeps_does_not_count_against_the_next(
    single: PolicyEvaluator, one_worker: WorkerPool
) -> None:
    hoard = _policy(
        "KEEP.append(' ' * (240 * 1024 * 1024))\nreturn len(KEEP)", prelude="KEEP = []"
    )
    assert single.evaluate(hoard, {}, settings=BIG).ok
    ordinary = _policy("return len(' ' * (200 * 1024 * 1024))")
    outcome = single.evaluate(ordinary, {}, settings={"memory_mb": 256})
    assert outcome.ok and outcome.result == 200 * 1024 * 1024, outcome.error


def test_memory_kept_below_the_recycle_threshold_does_not_count_either(
    single: PolicyEvaluator, one_worker: WorkerPool
) -> None:
    hoard = _policy(
        "KEEP.append(' ' * (48 * 1024 * 1024))\nreturn len(KEEP)", prelude="KEEP = []"
    )
    assert single.evaluate(hoard, {}, settings=BIG).ok
    pids = one_worker.worker_pids()
    ordinary = _policy("return len(' ' * (230 * 1024 * 1024))")
    outcome = single.evaluate(ordinary, {}, settings={"memory_mb": 256})
    assert outcome.ok and outcome.result == 230 * 1024 * 1024, outcome.error
    assert one_worker.worker_pids() == pids, "served by the same worker"


# -- 5. through the real service: typed errors, never HTTP 500 ----------------------------
@pytest.mark.parametrize(
    ("body", "error_type", "needle"),
    [
        pytest.param("x = []\nfor _ in range(970):\n    x = [x]\nreturn x", "InvalidOutput",
                     f"deeper than {MAX_RESULT_DEPTH} levels", id="too-deep"),
        pytest.param("raise ValueError('\\ud800')", "PolicyError", "ValueError: \\ud800",
                     id="lone-surrogate"),
        pytest.param("class Sneaky(dict):\n    def items(self):\n        raise ValueError()\n"
                     "return {'allowed': True, 'more': Sneaky(a=1)}", None, None,
                     id="raising-items"),
    ],
)
def test_the_service_answers_typed_errors(
    api: httpx.Client, unique_name: str, body: str, error_type: str | None, needle: str | None
) -> None:
    published = api.post("/policies", json={
        "name": unique_name, "version": "v0.0.1", "release_tag": "stable",
        "code": eval_body(body),
    })
    assert published.status_code == 201, published.text
    uri = published.json()["policy_rule_uri"]
    answer = api.post(f"/policies/{uri}/eval", json={"input_data": {}})
    if error_type is None:
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"] == {"allowed": True, "more": {"a": 1}}
        return
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["type"] == error_type
    assert needle in answer.json()["error"]["message"]
