"""Differential property: a benign policy decides the same in a shared worker as in a
fresh one, whatever ran in that worker before it.

Random sequences mix the benign policies of test_sandbox_legit with the escape table,
the resource-exhaustion table and the isolation attacks, all through one worker; each
benign result must equal the result the same policy gets from a worker of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_sources import eval_body
from test_sandbox_escapes import ESCAPES
from test_sandbox_isolation import _FINALLY_GEN, _MEMO_CHANNEL, REGISTER_ATTACKS
from test_sandbox_legit import LEGIT
from test_sandbox_limits import EXHAUSTION

from policy_runtime.evaluation import LimitsConfig, PolicyEvaluator
from policy_runtime.sandbox.pool import WorkerPool

_HELPERS = (
    "\n    def remember(self, item):\n"
    "        if item not in self.seen:\n            self.seen.append(item)\n"
)
_LIMITS = LimitsConfig(default_timeout_seconds=2.0)
_FAST = {"timeout_seconds": 0.5, "memory_mb": 128}

# (name, policy document, input data, settings)
Step = tuple[str, dict, Any, dict]

# Ordinary policies that happen to touch what the attacks aim at: type checks against
# ABCs, Fraction arithmetic, many allocations (the cyclic collector's trigger), many
# typing subscriptions and patterns (cache evictions), most of their memory allowance.
OBSERVERS = [
    ("abc-checks",
     "import typing, collections\n"
     "return [isinstance(1, typing.Mapping), isinstance('s', collections.UserDict),"
     " isinstance({}, typing.Mapping), isinstance([], typing.Sequence)]", None),
    ("fractions", "import fractions\nreturn str(fractions.Fraction(1, 3) + 0.5)", None),
    ("deepcopy", "import copy\nx = {'a': [1, {'b': 2}]}\nreturn copy.deepcopy(x, {})", None),
    ("allocations", "xs = [[i] for i in range(20000)]\nreturn len(xs)", None),
    ("typing-subscriptions",
     "import typing\nreturn len([typing.Literal[i] for i in range(300)])", None),
    ("many-patterns",
     "import re\nreturn sum(bool(re.match('x{%d}' % i, 'xx')) for i in range(600))", None),
    ("big-allocation", "return len(' ' * (200 * 1024 * 1024))", {"memory_mb": 256}),
]

BENIGN: list[Step] = [
    (name, {"code": eval_body(body) + _HELPERS, "policy_rule_uri": "p:v1-stable"}, data, {})
    for name, body, data, _ in LEGIT
] + [
    (name, {"code": eval_body(body)}, {}, limits or {}) for name, body, limits in OBSERVERS
]

ATTACKS: list[Step] = (
    [(name, {"code": eval_body(body)}, {}, {}) for name, body, _, _ in REGISTER_ATTACKS]
    + [
        ("memo-channel", {"code": eval_body(_MEMO_CHANNEL + "shared.append(1)\nreturn 1")},
         {}, {}),
        ("generator-cycle", {"code": eval_body(
            "g = spy()\nnext(g)\nbox = [g]\nbox.append(box)\nreturn 1", prelude=_FINALLY_GEN
        )}, {}, {}),
        ("typing-cache", {"code": eval_body(
            "import typing\ng = spy()\nnext(g)\ntyping.Literal[g]\nreturn 1",
            prelude=_FINALLY_GEN,
        )}, {}, {}),
        ("hoard", {"code": eval_body(
            "KEEP.append(' ' * (100 * 1024 * 1024))\nreturn 1", prelude="KEEP = []"
        )}, {}, {"memory_mb": 256}),
        ("module-state", {"code": eval_body(
            "STATE['n'] = STATE.get('n', 0) + 1\nreturn STATE['n']", prelude="STATE = {}"
        )}, {}, {}),
    ]
)
HOSTILE: list[Step] = (
    [(name, {"code": eval_body(body)}, {}, {}) for name, body, _, _ in ESCAPES]
    + [(name, {"code": eval_body(body)}, {}, _FAST) for name, body, _ in EXHAUSTION]
    + ATTACKS
)


def _outcome(evaluator: PolicyEvaluator, step: Step) -> dict:
    _, policy, data, limits = step
    return evaluator.evaluate(policy, data, settings=dict(limits)).to_dict()


def _comparable(outcome: dict) -> dict:
    return {k: v for k, v in outcome.items() if k != "duration_ms"}


@pytest.fixture(scope="module")
def fresh_results() -> dict[str, dict]:
    """Each benign policy's outcome in a worker that has run nothing else."""
    results = {}
    for step in BENIGN:
        with WorkerPool(1, max_memory_mb=1024, queue_timeout_seconds=60) as pool:
            results[step[0]] = _comparable(_outcome(PolicyEvaluator(pool, _LIMITS), step))
    return results


@pytest.fixture(scope="module")
def shared() -> Iterator[PolicyEvaluator]:
    with WorkerPool(1, max_memory_mb=1024, queue_timeout_seconds=60) as pool:
        yield PolicyEvaluator(pool, _LIMITS)


_steps = st.lists(
    st.one_of(st.sampled_from(BENIGN), st.sampled_from(HOSTILE)), min_size=2, max_size=8
)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(sequence=_steps)
def test_benign_results_do_not_depend_on_what_ran_before(
    fresh_results: dict[str, dict], shared: PolicyEvaluator, sequence: list[Step]
) -> None:
    names = set(fresh_results)
    for step in sequence:
        outcome = _comparable(_outcome(shared, step))
        if step[0] in names:
            assert outcome == fresh_results[step[0]], (step[0], [s[0] for s in sequence])


def test_every_attack_then_the_observers_in_one_worker(
    fresh_results: dict[str, dict], shared: PolicyEvaluator
) -> None:
    # Every isolation attack, each followed by every observer.
    observers = BENIGN[len(LEGIT):]
    for hostile in ATTACKS:
        _outcome(shared, hostile)
        for step in observers:
            assert _comparable(_outcome(shared, step)) == fresh_results[step[0]], (
                hostile[0], step[0]
            )
