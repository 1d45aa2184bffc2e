"""Whatever JSON goes into a policy comes back unchanged through the worker protocol."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_sources import ALLOW_ALL

from policy_runtime.evaluation import PolicyEvaluator

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=json_values)
def test_input_round_trips(evaluator: PolicyEvaluator, value: object) -> None:
    outcome = evaluator.evaluate({"code": ALLOW_ALL}, value)
    assert outcome.ok, outcome.error
    assert outcome.result == {"allowed": True, "input_data": value}
