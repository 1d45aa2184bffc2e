"""JSON Schema validation around evaluations, accepting upstream AIOS's schema templates.

Upstream AIOS policy documents often describe fields as a flat template
(``{"ip": {"type": "string", "pattern": ...}}``) rather than JSON Schema; such a
template is converted to the equivalent object schema so that existing documents keep
their meaning instead of silently validating nothing.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from policy_runtime.errors import InvalidInput, InvalidOutput, InvalidPolicy

_SCHEMA_KEYWORDS = frozenset(
    {
        "$schema", "$ref", "$defs", "type", "properties", "items", "required", "enum", "const",
        "anyOf", "oneOf", "allOf", "not", "if", "additionalProperties", "patternProperties",
    }
)
# upstream template key -> JSON Schema keyword, by the field's type
_LENGTH_KEYS = {
    ("max_length", "array"): "maxItems",
    ("min_length", "array"): "minItems",
    ("max_length", "string"): "maxLength",
    ("min_length", "string"): "minLength",
}
SCHEMA_FIELDS = (
    "policy_input_schema",
    "policy_output_schema",
    "policy_settings_schema",
    "policy_parameters_schema",
)


def _is_template(schema: dict) -> bool:
    return bool(schema) and not (_SCHEMA_KEYWORDS & schema.keys()) and all(
        isinstance(v, dict) for v in schema.values()
    )


def _convert_field(field: dict) -> dict:
    result: dict[str, Any] = {}
    kind = field.get("type")
    for key, value in field.items():
        if key == "type":
            if value != "any":
                result["type"] = value
        elif (key, kind) in _LENGTH_KEYS:
            result[_LENGTH_KEYS[(key, kind)]] = value
        elif key == "items" and isinstance(value, dict):
            result["items"] = to_json_schema(value) if _is_template(value) else value
        elif key not in ("max_length", "min_length"):
            result[key] = value
    return result


def to_json_schema(schema: dict) -> dict:
    """A JSON Schema for ``schema``, converting an upstream field template if it is one."""
    if _is_template(schema):
        return {
            "type": "object",
            "properties": {name: _convert_field(field) for name, field in schema.items()},
        }
    return schema


def check_schemas(document: dict) -> None:
    """Raise InvalidPolicy if any declared schema is not a valid JSON Schema."""
    for name in SCHEMA_FIELDS:
        schema = document.get(name)
        if not schema:
            continue
        if not isinstance(schema, dict):
            raise InvalidPolicy(f"{name} must be a JSON object (a JSON Schema)")
        try:
            Draft202012Validator.check_schema(to_json_schema(schema))
        except SchemaError as exc:
            raise InvalidPolicy(f"{name} is not a valid JSON Schema: {exc.message}") from None


@functools.lru_cache(maxsize=512)
def _validator(schema_json: str) -> Draft202012Validator:
    return Draft202012Validator(to_json_schema(json.loads(schema_json)))


def validate(schema: dict | None, value: Any, *, what: str, output: bool = False) -> None:
    """Raise InvalidInput (or InvalidOutput) naming the first offending path in ``value``."""
    if not schema:
        return
    validator = _validator(json.dumps(schema, sort_keys=True))
    error = next(iter(validator.iter_errors(value)), None)
    if error is None:
        return
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = f"{what}{path}: {error.message}"
    raise (InvalidOutput if output else InvalidInput)(message)
