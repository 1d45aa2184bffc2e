"""The jsonschema-rs fast path of schemas.validate may only ever accept what jsonschema accepts.

A value the fast path accepts skips jsonschema entirely, so a value jsonschema-rs accepts
and jsonschema refuses would pass a policy's schema unchecked. These tests compare the two
on generated schemas and values (boundary numbers, 1 / 1.0 / true, astral and lone
surrogate text, tuples, Enum members, Decimal, NaN, integers beyond 64 bits, ...), pin the
divergences found while building it, and check that the schemas it must not judge never
reach it.
"""

from __future__ import annotations

import enum
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policy_runtime import schemas
from policy_runtime.errors import InvalidInput

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "policies" / "examples"


def python_accepts(schema: dict, value: Any) -> bool:
    """jsonschema's answer alone (the bounded validator validate() falls back to)."""
    validator = schemas._validator(json.dumps(schema, sort_keys=True))
    try:
        return next(iter(validator.iter_errors(value)), None) is None
    except Exception:  # validate() refuses such a value too
        return False


def fast_path(schema: dict) -> schemas._FastPath | None:
    return schemas._fast_path(json.dumps(schema, sort_keys=True))


def fast_accepts(schema: dict, value: Any) -> bool:
    fast = fast_path(schema)
    return fast is not None and fast.accepts(value)


def outcome(schema: dict, value: Any) -> str:
    """What validate() does with ``value``: 'ok' or the error it raises."""
    try:
        schemas.validate(schema, value, what="input_data")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


# -- generated schemas and values ---------------------------------------------------------
_EDGES = [2**31, 2**53 - 1, 2**53, 2**53 + 1, 2**62, 2**62 + 1, 2**63 - 1, 2**63, 2**64 - 1,
          2**64, 2**64 + 1, 2**70]
INTEGERS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(_EDGES + [-edge for edge in _EDGES]),
    st.integers(),
)
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 0.5, 1.0, -1.0, 2.5, 1e300, -1e300, 5e-324]
                    + [float(edge) for edge in _EDGES] + [-float(edge) for edge in _EDGES]),
    st.floats(allow_nan=False, allow_infinity=False),
)
NUMBERS = INTEGERS | FLOATS
KEYS = st.sampled_from(["a", "b", "c", "é", "\U0001f600"])
JSON_TEXTS = st.sampled_from(["", "a", "ab", "\U0001f600", "e\u0301", "1"]) | st.text(max_size=4)
# a lone surrogate is no JSON text: jsonschema-rs cannot read it, jsonschema can
TEXTS = JSON_TEXTS | st.sampled_from(["\ud800", "a\udfff"])
SCALARS = st.none() | st.booleans() | NUMBERS | TEXTS
# in schemas, numbers the fast path takes: an integer beyond 2**53 sends the whole schema
# to jsonschema (test_schemas_the_fast_path_cannot_judge_never_reach_it)
SCHEMA_NUMBERS = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2**53, 2**53 - 1, -(2**53), 2**31]),
    st.integers(-(2**53), 2**53),
    FLOATS,
)
SCHEMA_SCALARS = st.none() | st.booleans() | SCHEMA_NUMBERS | TEXTS
SIZES = st.integers(0, 3) | st.sampled_from([0.0, 1.0, 2.0])
TYPES = ["null", "boolean", "integer", "number", "string", "array", "object"]


def _keywords(children: st.SearchStrategy) -> st.SearchStrategy[dict]:
    """A schema of the keywords the fast path takes, with ``children`` as subschemas."""
    return st.fixed_dictionaries({}, optional={
        "type": st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), min_size=1,
                                                  max_size=3, unique=True),
        "enum": st.lists(SCHEMA_SCALARS, max_size=4),
        "const": SCHEMA_SCALARS,
        "minimum": SCHEMA_NUMBERS,
        "maximum": SCHEMA_NUMBERS,
        "exclusiveMinimum": SCHEMA_NUMBERS,
        "exclusiveMaximum": SCHEMA_NUMBERS,
        "minLength": SIZES,
        "maxLength": SIZES,
        "minItems": SIZES,
        "maxItems": SIZES,
        "minProperties": SIZES,
        "maxProperties": SIZES,
        "required": st.lists(KEYS, max_size=3, unique=True),
        "format": st.sampled_from(["email", "ipv4", "date-time", "uri", "uuid", "no-such"]),
        "title": st.text(max_size=3),
        "properties": st.dictionaries(KEYS, children, max_size=3),
        "additionalProperties": children,
        "items": children,
        "prefixItems": st.lists(children, min_size=1, max_size=3),
    })


SCHEMAS = st.recursive(
    _keywords(st.booleans()),
    lambda children: _keywords(st.booleans() | children),
    max_leaves=6,
)
PLAIN_VALUES = st.recursive(
    st.none() | st.booleans() | NUMBERS | JSON_TEXTS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=4),
    max_leaves=12,
)


class Colour(enum.Enum):  # jsonschema-rs reads a member as its value, "red"
    RED = "red"


class Name(str, enum.Enum):  # noqa: UP042 - the str-mixin Enum of Python < 3.11
    A = "a"


class Count(enum.IntEnum):
    ONE = 1


class SubDict(dict):
    pass


class SubStr(str):
    pass


ODD_SCALARS = st.sampled_from([
    Colour.RED, Name.A, Count.ONE, Decimal("1"), Decimal("1.5"), math.nan, math.inf,
    -math.inf, SubStr("a"), 2**64 + 1, -(2**63) - 1, b"a",
])
ODD_KEYS = st.sampled_from([Name.A, 1, None, SubStr("a"), "\ud800"])
ANY_VALUES = st.recursive(
    SCALARS | ODD_SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=4).map(tuple),
        st.dictionaries(KEYS, children, max_size=4),
        st.dictionaries(KEYS | ODD_KEYS, children, max_size=3),
        st.dictionaries(KEYS, children, max_size=3).map(SubDict),
    ),
    max_leaves=12,
)
GENERATED = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@GENERATED
@given(schema=SCHEMAS, value=ANY_VALUES)
def test_the_fast_path_accepts_nothing_jsonschema_refuses(schema: dict, value: Any) -> None:
    if fast_accepts(schema, value):
        assert python_accepts(schema, value), "jsonschema-rs accepted what jsonschema refuses"


@GENERATED
@given(schema=SCHEMAS, value=PLAIN_VALUES)
def test_on_plain_json_both_accept_the_same_values(schema: dict, value: Any) -> None:
    fast = fast_path(schema)
    if fast is None:
        return
    if schemas._plain_where_read(fast._schema, value):
        assert fast.accepts(value) == python_accepts(schema, value)
    else:  # an integer beyond 2**53: jsonschema decides
        assert not fast.accepts(value) or python_accepts(schema, value)


@GENERATED
@given(schema=SCHEMAS, value=ANY_VALUES)
def test_validate_answers_as_jsonschema_alone_does(schema: dict, value: Any) -> None:
    answer = outcome(schema, value)
    with mock.patch.object(schemas._FastPath, "accepts", return_value=False):
        assert outcome(schema, value) == answer


def test_most_generated_schemas_take_the_fast_path() -> None:
    """Guards the tests above against passing vacuously."""
    taken = []

    @settings(max_examples=200, deadline=None, database=None)
    @given(schema=SCHEMAS)
    def sample(schema: dict) -> None:
        taken.append(fast_path(schema) is not None)

    sample()
    assert sum(taken) > len(taken) // 2


# -- explicit tricky cases ----------------------------------------------------------------
class Plain(enum.Enum):
    A = "x"


# (schema, value, whether jsonschema accepts it)
TRICKY = [
    pytest.param({"type": "array"}, (1, 2), False, id="tuple-is-no-array"),
    pytest.param({"type": "string"}, Plain.A, False, id="enum-member-is-no-string"),
    pytest.param({"type": "integer"}, Decimal("1"), False, id="decimal-is-no-integer"),
    pytest.param({"type": "number"}, Decimal("1.5"), True, id="decimal-is-a-number"),
    pytest.param({"required": ["a"]}, {Name.A: 1}, True, id="str-enum-key"),
    pytest.param({"type": "object"}, {1: "a"}, True, id="int-key"),
    pytest.param({"maximum": 2.0**62}, 2**62 + 1, False, id="int-against-float-bound"),
    pytest.param({"exclusiveMaximum": 2.0**63}, 2**63, False, id="int-at-float-bound"),
    pytest.param({"exclusiveMinimum": -(2.0**63)}, -(2**63), False, id="negative-int-at-bound"),
    pytest.param({"exclusiveMaximum": -(2**63)}, -(2.0**63), False, id="float-at-int-bound"),
    pytest.param({"maximum": 2.0**64}, 2**64 + 1, False, id="beyond-64-bits"),
    pytest.param({"maximum": 2**64}, 2**64 + 1, False, id="beyond-64-bits-both"),
    pytest.param({"maximum": 2.0**53}, 2**53 + 1, False, id="just-beyond-float-precision"),
    pytest.param({"maximum": 2**53}, 2.0**53, True, id="at-float-precision"),
    pytest.param({"type": "integer"}, 2**70, True, id="huge-integer"),
    pytest.param({"type": "integer"}, 1.0, True, id="integral-float-is-integer"),
    pytest.param({"type": "integer"}, 1e300, True, id="huge-integral-float"),
    pytest.param({"type": "integer"}, 1.5, False, id="fraction-is-no-integer"),
    pytest.param({"type": "integer"}, True, False, id="true-is-no-integer"),
    pytest.param({"type": "number"}, False, False, id="false-is-no-number"),
    pytest.param({"minimum": 5}, True, True, id="minimum-ignores-booleans"),
    pytest.param({"enum": [1]}, True, False, id="true-is-not-1"),
    pytest.param({"enum": [True]}, 1, False, id="1-is-not-true"),
    pytest.param({"enum": [1]}, 1.0, True, id="1.0-is-1"),
    pytest.param({"const": 1.0}, 1, True, id="1-is-1.0"),
    pytest.param({"const": 0}, False, False, id="false-is-not-0"),
    pytest.param({"const": 0}, -0.0, True, id="minus-zero-is-0"),
    pytest.param({"const": None}, math.nan, False, id="nan-is-not-null"),
    pytest.param({"type": "null"}, math.nan, False, id="nan-is-no-null"),
    pytest.param({"type": "number"}, math.nan, True, id="nan-is-a-python-number"),
    pytest.param({"maximum": 3}, math.inf, False, id="infinity-above-maximum"),
    pytest.param({"minimum": 3}, math.inf, True, id="infinity-above-minimum"),
    pytest.param({"maxLength": 1}, "\U0001f600", True, id="astral-is-one-character"),
    pytest.param({"maxLength": 1}, "e\u0301", False, id="combining-is-two"),
    pytest.param({"maxLength": 1}, "\ud800", True, id="lone-surrogate"),
    pytest.param({"maxLength": 0}, "\ud800", False, id="lone-surrogate-too-long"),
    pytest.param({"const": "\U0001f600"}, "\ud83d\ude00", False, id="surrogate-pair-text"),
    pytest.param({"additionalProperties": False}, {"\ud800": 1}, False, id="lone-surrogate-key"),
    pytest.param({"required": ["a"]}, {"a": 1, "\ud800": 1}, True, id="lone-surrogate-extra"),
    pytest.param({"type": "string"}, SubStr("a"), True, id="str-subclass"),
    pytest.param({"type": "object", "required": ["a"]}, SubDict(a=1), True, id="dict-subclass"),
    pytest.param({"format": "email"}, "not an address", True, id="format-not-asserted"),
    pytest.param({"format": "ipv4"}, "999.1.1.1", True, id="ipv4-not-asserted"),
    pytest.param({"type": "object", "properties": {"a": {
        "type": "object", "additionalProperties": False, "properties": {"b": True}}}},
        {"a": {"b": 1, "c": 2}}, False, id="nested-additionalProperties-false"),
    pytest.param({"type": "object", "additionalProperties": {"type": "integer"}},
                 {"a": 1, "b": "2"}, False, id="additionalProperties-schema"),
    pytest.param({"prefixItems": [{"type": "string"}], "items": False}, ["a", 1], False,
                 id="items-false-after-prefix"),
    pytest.param({"prefixItems": [{"type": "string"}], "items": {"type": "integer"}},
                 ["a", 1], True, id="items-after-prefix"),
    pytest.param({"prefixItems": [{"type": "string"}]}, [1], False, id="prefixItems"),
    pytest.param({"items": {"type": "integer"}}, [1, (2,)], False, id="tuple-item"),
    pytest.param({"properties": {"a": False}}, {"a": 1}, False, id="false-subschema"),
    pytest.param({"properties": {"a": False}}, {"b": 1}, True, id="false-subschema-unused"),
    pytest.param({"properties": {"a": True}}, {"a": Plain.A}, True, id="true-subschema"),
    pytest.param({"items": False}, [], True, id="items-false-empty"),
    pytest.param({}, Plain.A, True, id="empty-schema"),
    pytest.param({"minItems": 1}, {}, True, id="minItems-ignores-objects"),
    pytest.param({"required": ["a"]}, ["a"], True, id="required-ignores-arrays"),
    pytest.param({"block_id": {"type": "string"}, "replicas": {"type": "integer"}},
                 {"block_id": "b", "replicas": True}, False, id="template-converted"),
    pytest.param({"n": {"type": "array", "max_length": 1}}, {"n": [1, 2]}, False,
                 id="template-max-length"),
]


@pytest.mark.parametrize(("schema", "value", "accepted"), TRICKY)
def test_tricky_values_are_judged_as_jsonschema_judges_them(
    schema: dict, value: Any, accepted: bool
) -> None:
    assert python_accepts(schema, value) is accepted, "the expectation is jsonschema's"
    if accepted:
        assert outcome(schema, value) == "ok"
    else:
        assert outcome(schema, value).startswith("InvalidInput: input_data")
        assert not fast_accepts(schema, value)


def test_the_guards_are_needed_jsonschema_rs_alone_accepts_these() -> None:
    """Without _plain_where_read the fast path would accept values jsonschema refuses.

    (jsonschema-rs reads Python values so by design; its float comparison of integers,
    "maximum": 2.0**62 accepting 2**62 + 1, is version-dependent: TRICKY covers it.)
    """
    for schema, value in [({"type": "array"}, (1, 2)), ({"type": "string"}, Plain.A),
                          ({"type": "integer"}, Decimal("1"))]:
        fast = fast_path(schema)
        assert fast is not None and fast._validator.is_valid(value)
        assert not python_accepts(schema, value) and not fast.accepts(value)


def test_a_value_jsonschema_rs_cannot_read_goes_to_jsonschema() -> None:
    schema = {"type": "string"}
    fast = fast_path(schema)
    assert fast is not None and not fast.accepts("\ud800")  # jsonschema-rs raises on it
    assert outcome(schema, "\ud800") == "ok"


def test_a_failure_of_jsonschema_rs_falls_back_to_jsonschema() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    fast = fast_path(schema)
    assert fast is not None
    broken = mock.Mock(is_valid=mock.Mock(side_effect=BaseException("panic")))
    with mock.patch.object(fast, "_validator", broken):
        assert not fast.accepts({"n": 1})


# -- what never takes the fast path -------------------------------------------------------
def _inside(keyword_schema: dict) -> list[dict]:
    """``keyword_schema`` at the top and nested under each keyword that holds schemas."""
    return [
        keyword_schema,
        {"type": "object", "properties": {"a": keyword_schema}},
        {"type": "object", "additionalProperties": keyword_schema},
        {"type": "array", "items": keyword_schema},
        {"type": "array", "prefixItems": [{"type": "string"}, keyword_schema]},
    ]


EXCLUDED = {
    "pattern": {"type": "string", "pattern": "^a"},
    "patternProperties": {"type": "object", "patternProperties": {"^a": {"type": "string"}}},
    "multipleOf": {"type": "number", "multipleOf": 0.1},
    "uniqueItems": {"type": "array", "uniqueItems": True},
    "$schema-nested": {"$schema": schemas._DIALECT, "type": "string"},
    "$id": {"$id": "https://example.com/a", "type": "string"},
    "anyOf": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    "$ref": {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"},
    "contains": {"type": "array", "contains": {"type": "string"}},
    "integer-beyond-2**53": {"type": "integer", "maximum": 2**53 + 1},
    "integer-in-enum-beyond-2**53": {"enum": [-(2**60)]},
    "not-a-json-schema": {"type": "int"},
}
EXCLUDED_CASES = [
    pytest.param(schema, id=f"{name}-{where}")
    for name, keyword_schema in EXCLUDED.items()
    for where, schema in zip(
        ["top", "properties", "additionalProperties", "items", "prefixItems"],
        _inside(keyword_schema), strict=True,
    )
    if not (name == "$schema-nested" and where == "top")  # the one allowed $schema
]


def _deep(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.parametrize("schema", [
    *EXCLUDED_CASES,
    pytest.param({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string"},
                 id="another-dialect"),
    pytest.param({"type": "string", "default": math.nan}, id="nan-in-schema"),
    pytest.param({"const": math.inf}, id="infinity-in-schema"),
    pytest.param(_deep(schemas._FAST_MAX_LEVELS), id="too-deep"),
])
def test_schemas_the_fast_path_cannot_judge_never_reach_it(schema: dict) -> None:
    assert fast_path(schema) is None
    answer = outcome(schema, "a")
    with mock.patch.object(schemas._FastPath, "accepts", side_effect=AssertionError):
        assert outcome(schema, "a") == answer


@pytest.mark.parametrize("schema", [
    pytest.param({"$schema": schemas._DIALECT, "type": "string"}, id="its-own-dialect"),
    pytest.param({"type": "string", "format": "email"}, id="format"),
    pytest.param(_deep(schemas._FAST_MAX_LEVELS - 1), id="deep-enough"),
    pytest.param({"a": {"type": "string"}}, id="template"),
])
def test_these_schemas_take_the_fast_path(schema: dict) -> None:
    assert fast_path(schema) is not None


# -- the example policies -----------------------------------------------------------------
def _example_inputs() -> list:
    cases = []
    for policy_file in sorted(EXAMPLES_DIR.glob("*/policy.json")):
        schema = json.loads(policy_file.read_text()).get("policy_input_schema")
        for case_file in sorted((policy_file.parent / "cases").glob("*.json")):
            value = json.loads(case_file.read_text())["input_data"]
            if schema:
                name = f"{policy_file.parent.name}/{case_file.stem}"
                cases.append(pytest.param(schema, value, id=name))
    return cases


@pytest.mark.parametrize(("schema", "value"), _example_inputs())
def test_valid_example_inputs_are_accepted_without_jsonschema(schema: dict, value: Any) -> None:
    fast = fast_path(schema)
    assert fast is not None
    accepted = python_accepts(schema, value)
    assert fast.accepts(value) is accepted
    if accepted:
        with mock.patch.object(
            schemas._BoundedValidator, "iter_errors", side_effect=AssertionError
        ):
            schemas.validate(schema, value, what="input_data")


def test_a_refused_input_gets_jsonschemas_message() -> None:
    policy = json.loads((EXAMPLES_DIR / "update-cluster-field-guard" / "policy.json").read_text())
    with pytest.raises(InvalidInput) as caught:
        schemas.validate(policy["policy_input_schema"], {"cluster_id": 1, "update": {}},
                         what="input_data")
    assert str(caught.value) == "input_data.cluster_id: 1 is not of type 'string'"
