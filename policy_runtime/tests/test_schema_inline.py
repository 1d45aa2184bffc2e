"""Which validations may run on the event loop: linear schemas and small values only.

The HTTP service validates a decision's input and result in a thread unless the work is
certainly short (evaluation.INLINE_VALIDATION_WORK). A schema that tries alternatives or
refers to itself must never be validated on the loop, whatever the size of the value:
these tests pin the classification; test_hostile_requests.py checks that the widest
schema the bound admits keeps other requests answered.
"""

from __future__ import annotations

import json

import pytest

from policy_runtime import evaluation, schemas

LINEAR = [
    pytest.param({"block_id": {"type": "string"}, "replicas": {"type": "integer"}},
                 id="upstream-template"),
    pytest.param({"type": "object", "required": ["a"], "additionalProperties": False,
                  "properties": {"a": {"type": "string", "pattern": "^[a-z]+$",
                                       "maxLength": 63}}}, id="object-with-pattern"),
    pytest.param({"type": "array", "items": {"enum": ["a", "b", 1, None]},
                  "uniqueItems": True}, id="small-scalar-enum"),
    pytest.param({"type": "array", "prefixItems": [{"type": "string"}, {"const": 3}]},
                 id="prefixItems"),
    pytest.param({"type": "object", "additionalProperties": {"type": "number"}},
                 id="additionalProperties-schema"),
]

NOT_LINEAR = [
    pytest.param({"anyOf": [{"type": "string"}, {"type": "integer"}]}, id="anyOf"),
    pytest.param({"type": "object", "properties": {"a": {"oneOf": [{}, {}]}}},
                 id="oneOf-nested-in-properties"),
    pytest.param({"type": "array", "items": {"allOf": [{"type": "object"}]}},
                 id="allOf-in-items"),
    pytest.param({"not": {"type": "null"}}, id="not"),
    pytest.param({"if": {"type": "string"}, "then": {"minLength": 1}}, id="if-then"),
    pytest.param({"type": "object", "properties": {"self": {"$ref": "#"}}}, id="ref-to-itself"),
    pytest.param({"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a"}, id="defs-and-ref"),
    pytest.param({"type": "object", "patternProperties": {"^a": {"type": "string"}}},
                 id="patternProperties"),
    pytest.param({"type": "array", "contains": {"type": "string"}}, id="contains"),
    pytest.param({"enum": list(range(65))}, id="enum-of-65"),
    pytest.param({"enum": [{"a": 1}]}, id="enum-of-objects"),
    pytest.param({"const": {"a": [1, 2]}}, id="const-object"),
    pytest.param({"type": "object", "unevaluatedProperties": False}, id="unevaluatedProperties"),
    pytest.param({"type": "object", "dependentSchemas": {"a": {"required": ["b"]}}},
                 id="dependentSchemas"),
    pytest.param({"type": "object", "properties": []}, id="properties-not-a-map"),
]


@pytest.mark.parametrize("schema", LINEAR)
def test_linear_schemas_are_recognised(schema: dict) -> None:
    assert schemas.is_linear(schema)


@pytest.mark.parametrize("schema", NOT_LINEAR)
def test_schemas_that_try_alternatives_or_refer_to_themselves_are_not_linear(
    schema: dict,
) -> None:
    assert not schemas.is_linear(schema)
    policy = {"policy_input_schema": schema}
    assert not evaluation._inline(policy, 2), "even a 2-byte value goes to a thread"


def test_a_deeply_nested_schema_is_not_linear() -> None:
    schema: dict = {"type": "string"}
    for _ in range(5000):
        schema = {"type": "array", "items": schema}
    assert not schemas.is_linear(schema)


def test_the_bound_weighs_the_value_the_defaults_and_the_schemas() -> None:
    schema = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(20)}}
    schema_bytes = len(json.dumps([schema, None, None, None]))
    no_defaults = len(json.dumps([None, None]))  # settings and parameters: none declared
    largest = evaluation.INLINE_VALIDATION_WORK // schema_bytes - no_defaults
    policy = {"policy_input_schema": schema}
    assert evaluation._inline(policy, largest)
    assert not evaluation._inline(policy, largest + 1)
    assert not evaluation._inline(policy, None), "a value of unknown size goes to a thread"
    # defaults are merged into the parameters that are validated: they count as value
    with_defaults = {"policy_input_schema": schema, "policy_parameters": {"k": "v" * 1000}}
    assert not evaluation._inline(with_defaults, largest)


def test_a_policy_without_schemas_has_nothing_to_validate() -> None:
    assert evaluation._inline({"code": "..."}, None)
    assert evaluation._inline({"policy_input_schema": {}}, 10**9)


def test_the_verdict_is_remembered_per_policy_object_not_per_equal_content() -> None:
    first = {"policy_input_schema": {"a": {"type": "string"}}}
    second = {"policy_input_schema": {"anyOf": [{"type": "string"}]}}
    assert evaluation._inline(first, 10)
    assert not evaluation._inline(second, 10)
    assert evaluation._inline(first, 10), "the second policy did not replace the first's"


def test_inline_and_threaded_validation_report_the_same_error() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 3}}}
    messages = []
    for value in ({"n": 4}, {"n": 4}):
        with pytest.raises(Exception) as caught:
            schemas.validate(schema, value, what="input_data")
        messages.append(str(caught.value))
    assert messages[0] == messages[1] == "input_data.n: 4 is greater than the maximum of 3"


def test_a_dialect_is_named_only_at_the_top_of_a_schema() -> None:
    """$schema in a subschema makes jsonschema validate that part with its stock
    validator (backtracking patterns, no time limit): refused at publish, and at the
    decisions of a policy stored before that refusal."""
    from policy_runtime import schemas
    from policy_runtime.errors import InvalidPolicy

    dialect = "https://json-schema.org/draft/2020-12/schema"
    nested = {"$schema": dialect, "type": "object",
              "properties": {"a": {"$schema": dialect, "pattern": "^(a+)+$"}}}
    with pytest.raises(InvalidPolicy, match=r"policy_input_schema\.properties\.a: \$schema"):
        schemas.check_schemas({"policy_input_schema": nested})
    with pytest.raises(InvalidPolicy, match=r"\$schema is allowed only at the top"):
        schemas.validate(nested, {"a": "a" * 40 + "!"}, what="input_data", timeout=0.5)
    # at the top, as a property's name, or as data it is no dialect switch
    fine = {"$schema": dialect, "type": "object",
            "properties": {"$schema": {"type": "string"}},
            "default": {"$schema": "x"}, "examples": [{"$schema": dialect}]}
    schemas.check_schemas({"policy_input_schema": fine})
    schemas.validate(fine, {"$schema": "anything"}, what="input_data")
