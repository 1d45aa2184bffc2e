"""JSON Schema validation around evaluations, accepting upstream AIOS's schema templates.

Validation is bounded: patterns (``pattern``, ``patternProperties``) are matched by RE2
in linear time and refused at publish when they cannot be, ``uniqueItems`` is checked in
linear time, and one validation stops with InvalidInput after ``timeout`` seconds.
Validation is CPU-bound: the HTTP service runs it off the event loop. Where the Rust
validator jsonschema-rs provably agrees with jsonschema, a value it accepts is accepted
without running jsonschema (the fast path, below); everything else is jsonschema's.

Upstream AIOS policy documents often describe fields as a flat template
(``{"ip": {"type": "string", "pattern": ...}}``) rather than JSON Schema; such a
template is converted to the equivalent object schema so that existing documents keep
their meaning instead of silently validating nothing.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError
from referencing.exceptions import Unresolvable

from policy_runtime.errors import InvalidInput, InvalidOutput, InvalidPolicy
from policy_runtime.regex_safety import UnsafePattern, compile_linear

DEFAULT_TIMEOUT_SECONDS = 2.0
_MESSAGE_CHARS = 300

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


def _patterns(schema: Any, where: str) -> Iterator[tuple[str, Any]]:
    """Every regular expression of a schema: ``pattern`` values, ``patternProperties`` keys."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "pattern" and isinstance(value, str):
                yield f"{where}.pattern", value
            elif key == "patternProperties" and isinstance(value, dict):
                for pattern in value:
                    yield f"{where}.patternProperties", pattern
            yield from _patterns(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for index, item in enumerate(schema):
            yield from _patterns(item, f"{where}[{index}]")


# Values that are data, not schemas, and maps whose keys are names, not keywords.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
_NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions",
                        "dependentSchemas"})


def _nested_dialects(schema: Any, where: str, top: bool = True) -> Iterator[str]:
    """Where a subschema names a dialect (``$schema`` below the top). jsonschema validates
    such a subschema with its stock validator of that dialect, outside this module's
    bounds (RE2 patterns, time limit): a backtracking pattern there runs unbounded."""
    if isinstance(schema, list):
        for index, item in enumerate(schema):
            yield from _nested_dialects(item, f"{where}[{index}]", top=False)
        return
    if not isinstance(schema, dict):
        return
    if not top and "$schema" in schema:
        yield where
    for key, value in schema.items():
        if key in _DATA_KEYWORDS:
            continue
        if key in _NAME_MAPS and isinstance(value, dict):
            for name, item in value.items():
                yield from _nested_dialects(item, f"{where}.{key}.{name}", top=False)
        else:
            yield from _nested_dialects(value, f"{where}.{key}", top=False)


def _refuse_nested_dialects(schema: Any, name: str) -> None:
    for where in _nested_dialects(schema, name):
        raise InvalidPolicy(
            f"{where}: $schema is allowed only at the top of a schema; remove it from the "
            "subschema (every part of a schema is validated as JSON Schema 2020-12)"
        )


def check_schemas(document: dict) -> None:
    """Raise InvalidPolicy if any declared schema is not a valid JSON Schema, or uses a
    pattern that cannot be matched in linear time."""
    for name in SCHEMA_FIELDS:
        schema = document.get(name)
        if not schema:
            continue
        if not isinstance(schema, dict):
            raise InvalidPolicy(f"{name} must be a JSON object (a JSON Schema)")
        converted = to_json_schema(schema)
        try:
            Draft202012Validator.check_schema(converted)
        except SchemaError as exc:
            raise InvalidPolicy(f"{name} is not a valid JSON Schema: {exc.message}") from None
        except RecursionError:
            raise InvalidPolicy(f"{name} is nested too deeply") from None
        _refuse_nested_dialects(converted, name)
        patterns = list(_patterns(converted, name))
        for where, pattern in patterns:
            try:
                compile_linear(pattern)
            except UnsafePattern as exc:
                raise InvalidPolicy(f"{where}: {exc}") from None
        keyed = any(where.endswith(".patternProperties") for where, _ in patterns)
        if keyed and '"unevaluatedProperties"' in json.dumps(converted):
            # jsonschema matches patternProperties for unevaluatedProperties with Python's
            # backtracking re, outside the keywords matched by RE2 here
            raise InvalidPolicy(
                f"{name}: unevaluatedProperties cannot be combined with patternProperties; "
                "use additionalProperties"
            )


# -- bounded validation ----------------------------------------------------------------
class _Deadline(threading.local):
    at = float("inf")


_deadline = _Deadline()


class _TooSlow(Exception):
    pass


Keyword = Callable[[Any, Any, Any, dict], Any]


def _timed(keyword: Keyword) -> Keyword:
    """The keyword, refusing to start after the current validation's deadline."""

    def bounded(validator: Any, value: Any, instance: Any, schema: dict) -> Any:
        if time.monotonic() > _deadline.at:
            raise _TooSlow
        return keyword(validator, value, instance, schema)

    return bounded


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict) -> Iterator:
    if validator.is_type(instance, "string") and not compile_linear(pattern).search(instance):
        yield ValidationError(f"{_short(instance)} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict, instance: Any, schema: dict) -> Iterator:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = compile_linear(pattern)
        for key, value in instance.items():
            if regex.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict, schema: dict) -> list[str]:
    properties = schema.get("properties", {})
    regexes = [compile_linear(pattern) for pattern in schema.get("patternProperties", {})]
    return [
        key for key in instance
        if key not in properties and not any(regex.search(key) for regex in regexes)
    ]


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: dict) -> Iterator:
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        names = ", ".join(_short(extra) for extra in sorted(extras)[:10])
        more = f" and {len(extras) - 10} more" if len(extras) > 10 else ""
        yield ValidationError(f"additional properties are not allowed ({names}{more})")


def _key(value: Any) -> Any:
    """A hashable key equal for JSON-equal values (1 == 1.0, but true != 1)."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("l", tuple(_key(item) for item in value))
    if isinstance(value, dict):
        return ("d", frozenset((key, _key(item)) for key, item in value.items()))
    if value is None:
        return ("z",)
    return ("o", id(value))


def _unique_items(validator: Any, unique: Any, instance: Any, schema: dict) -> Iterator:
    """uniqueItems in linear time (jsonschema compares unsortable items pairwise)."""
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: dict[Any, int] = {}
    for index, item in enumerate(instance):
        first = seen.setdefault(_key(item), index)
        if first != index:
            yield ValidationError(f"has non-unique elements: [{index}] equals [{first}]")
            return


_OVERRIDES: dict[str, Keyword] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "uniqueItems": _unique_items,
}
_BoundedValidator = validators.extend(
    Draft202012Validator,
    {
        name: _timed(_OVERRIDES.get(name, keyword))
        for name, keyword in {**Draft202012Validator.VALIDATORS, **_OVERRIDES}.items()
    },
)


@functools.lru_cache(maxsize=512)
def _validator(schema_json: str) -> Any:
    schema = to_json_schema(json.loads(schema_json))
    # a policy stored before check_schemas refused them is refused here, at its decisions
    _refuse_nested_dialects(schema, "schema")
    return _BoundedValidator(schema)


# Validators by the identity of the schema object they were built for: a cached policy
# is one object, so its decisions skip re-encoding its schemas. The entry holds the
# schema, so its id cannot be reused by another object while it is remembered.
_BY_IDENTITY: dict[int, tuple[dict, Any, _FastPath | None]] = {}
_BY_IDENTITY_KEPT = 512


def _validators_for(schema: dict) -> tuple[Any, _FastPath | None]:
    """The bounded jsonschema validator for ``schema``, and its fast path if it has one."""
    entry = _BY_IDENTITY.get(id(schema))
    if entry is not None and entry[0] is schema:
        return entry[1], entry[2]
    schema_json = json.dumps(schema, sort_keys=True)
    validator, fast = _validator(schema_json), _fast_path(schema_json)
    if len(_BY_IDENTITY) >= _BY_IDENTITY_KEPT:
        _BY_IDENTITY.clear()
    _BY_IDENTITY[id(schema)] = (schema, validator, fast)
    return validator, fast


# Keywords whose check costs time linear in the size of the value and of the schema,
# without trying alternatives: no anyOf/oneOf/allOf/not/if (a value checked against
# every branch, nested branches multiply), no $ref (a schema that refers to itself),
# no patternProperties or contains (each property or item against each subschema).
# ``pattern`` is matched by RE2, in linear time.
_LINEAR_KEYWORDS = frozenset({
    "$schema", "$id", "$comment", "title", "description", "default", "examples",
    "deprecated", "readOnly", "writeOnly", "format",
    "type", "properties", "items", "prefixItems", "required", "enum", "const",
    "additionalProperties", "minLength", "maxLength", "minItems", "maxItems",
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "minProperties", "maxProperties", "pattern", "uniqueItems",
})
# keywords whose value is a schema, or a map or list of schemas, to look into
_SUBSCHEMA_MAPS = frozenset({"properties"})
_SUBSCHEMAS = frozenset({"items", "additionalProperties"})
# enum and const compare the value with each listed one: kept cheap when those are few
# and scalar
_MAX_LINEAR_ENUM = 64
_SCALARS = (str, int, float, bool, type(None))


def _cheap_constants(key: str, value: Any) -> bool:
    if key == "const":
        return isinstance(value, _SCALARS)
    if key == "enum":
        return (isinstance(value, list) and len(value) <= _MAX_LINEAR_ENUM
                and all(isinstance(item, _SCALARS) for item in value))
    return True


def _linear(
    schema: Any, keywords: frozenset[str] = _LINEAR_KEYWORDS, levels: int = sys.maxsize
) -> bool:
    """Whether ``schema`` is linear, using only ``keywords`` and nested at most ``levels``
    subschemas deep."""
    if isinstance(schema, bool):
        return True
    if levels <= 0 or not isinstance(schema, dict) or not keywords.issuperset(schema):
        return False
    for key, value in schema.items():
        if not _cheap_constants(key, value):
            return False
        if key in _SUBSCHEMA_MAPS:
            if not isinstance(value, dict) or not all(
                _linear(v, keywords, levels - 1) for v in value.values()
            ):
                return False
        elif key in _SUBSCHEMAS or key == "prefixItems":
            items = value if key == "prefixItems" and isinstance(value, list) else [value]
            if not all(_linear(item, keywords, levels - 1) for item in items):
                return False
    return True


@functools.lru_cache(maxsize=512)
def _linear_json(schema_json: str) -> bool:
    try:
        return _linear(to_json_schema(json.loads(schema_json)))
    except RecursionError:
        return False


def is_linear(schema: dict | None) -> bool:
    """Whether validating against ``schema`` takes time linear in the value's size, with
    no alternatives tried: such a schema can be checked where waiting is not allowed."""
    if not schema:
        return True
    try:
        return _linear_json(json.dumps(schema, sort_keys=True))
    except (TypeError, ValueError, RecursionError):
        return False


# -- the fast path: jsonschema-rs, where it provably agrees ---------------------------
# jsonschema-rs validates in Rust from the schema as data (no generated code to run), many
# times faster than jsonschema. It is trusted only to accept: a value it refuses, or
# cannot read, goes to jsonschema as before, so errors, messages and limits are unchanged.
# The rules below are what tests/test_schema_fast_path.py checks against jsonschema.

# Keywords on which both accept the same values: the linear ones (so validation takes
# linear time without a deadline) except pattern and patternProperties (RE2 here, Rust's
# regex there), multipleOf (float remainders), uniqueItems (this module's equality) and
# $schema and $id (jsonschema switches validator class at a nested $schema). format
# stays: neither side asserts it (no format_checker here, validate_formats=False there).
_FAST_KEYWORDS = _LINEAR_KEYWORDS - {
    "pattern", "patternProperties", "multipleOf", "uniqueItems", "$schema", "$id",
}
# The one $schema allowed, at the top: it names the dialect both validate anyway.
_DIALECT = "https://json-schema.org/draft/2020-12/schema"
# jsonschema spends Python frames on each level of schema (RecursionError near 450
# levels), jsonschema-rs none: this keeps jsonschema far from failing where Rust accepts.
_FAST_MAX_LEVELS = 32
# jsonschema-rs compares an integer with a float as two floats (it accepts 2**62 + 1 for
# "maximum": 2.0**62); integers that a float holds exactly compare alike on both sides.
_EXACT_INTEGERS = range(-(2**53), 2**53 + 1)
_STR = {str}


def _plain(value: Any) -> bool:
    """Whether ``value`` is JSON that jsonschema-rs reads as jsonschema does: exactly a
    dict with str keys, list, str, bool, None, finite float or int within +-2**53.

    jsonschema-rs reads a tuple as an array, an Enum member or a str-Enum key as its
    value, a Decimal as a number and compares huge integers as floats; jsonschema does not.
    """
    kind = type(value)
    if kind is int:
        return value in _EXACT_INTEGERS
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        return not value or set(map(type, value)) == _STR
    return kind is str or kind is list or kind is bool or value is None


def _plain_tree(value: Any) -> bool:
    """Whether ``value`` and everything in it is plain (see _plain)."""
    if not _plain(value):
        return False
    if type(value) is dict:
        return all(_plain_tree(item) for item in value.values())
    if type(value) is list:
        return all(_plain_tree(item) for item in value)
    return True


def _plain_where_read(schema: Any, value: Any) -> bool:
    """Whether each part of ``value`` that ``schema`` (of _FAST_KEYWORDS) looks at is
    plain; the parts no subschema reaches are not looked at by either validator."""
    if isinstance(schema, bool):
        return True
    if not _plain(value):
        return False
    # loops rather than all(...): this runs on every decision, and generators cost
    if type(value) is dict:
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if not _plain_where_read(properties.get(key, extra), item):
                return False
    elif type(value) is list:
        prefix = schema.get("prefixItems", [])
        rest = schema.get("items", True)
        for index, item in enumerate(value):
            if not _plain_where_read(prefix[index] if index < len(prefix) else rest, item):
                return False
    return True


def _fast_path_agrees(schema: dict) -> bool:
    """Whether jsonschema-rs accepts exactly the values jsonschema accepts for ``schema``
    (a converted one, see to_json_schema) among the values _plain_where_read lets through."""
    if schema.get("$schema") == _DIALECT:
        schema = {key: value for key, value in schema.items() if key != "$schema"}
    if not _linear(schema, _FAST_KEYWORDS, _FAST_MAX_LEVELS):
        return False
    try:
        Draft202012Validator.check_schema(schema)
        return _plain_tree(schema)
    except (SchemaError, RecursionError):  # RecursionError: a deeply nested "default"
        return False


class _FastPath:
    """jsonschema-rs for one schema on which it agrees with jsonschema (_fast_path_agrees)."""

    def __init__(self, schema: dict) -> None:
        self._schema = schema
        # offline: never fetch a remote document, whatever the schema names
        self._validator = jsonschema_rs.Draft202012Validator(
            schema, validate_formats=False, offline=True
        )

    def accepts(self, value: Any) -> bool:
        """True when jsonschema would accept ``value`` too; False when jsonschema must
        decide (jsonschema-rs refuses the value, cannot read it or reads it otherwise)."""
        if not _plain_where_read(self._schema, value):
            return False
        try:
            return self._validator.is_valid(value) is True
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # anything, even a Rust panic (pyo3's PanicException)
            return False


@functools.lru_cache(maxsize=512)
def _fast_path(schema_json: str) -> _FastPath | None:
    """The fast path for a schema (a JSON text), or None when it has none."""
    schema = to_json_schema(json.loads(schema_json))
    if not _fast_path_agrees(schema):
        return None
    try:
        return _FastPath(schema)
    except Exception:  # a schema jsonschema-rs does not compile has no fast path
        return None


def validate(
    schema: dict | None,
    value: Any,
    *,
    what: str,
    output: bool = False,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> None:
    """Raise InvalidInput (or InvalidOutput) naming the first offending path in ``value``.

    Stops with the same error after ``timeout`` seconds of validation.
    """
    if not schema:
        return
    validator, fast = _validators_for(schema)
    if fast is not None and fast.accepts(value):
        return
    failure = InvalidOutput if output else InvalidInput
    _deadline.at = time.monotonic() + timeout
    try:
        error = next(iter(validator.iter_errors(value)), None)
    except _TooSlow:
        raise failure(
            f"{what}: validation against the policy's schema took longer than {timeout:g} s "
            "(AIOS_SCHEMA_TIMEOUT_SECONDS); simplify the schema or send less data"
        ) from None
    except UnsafePattern as exc:
        raise InvalidPolicy(f"the schema of {what}: {exc}") from None
    except Unresolvable as exc:
        raise InvalidPolicy(f"the schema of {what} has an unresolvable $ref: {exc}") from None
    except RecursionError:
        raise failure(f"{what} is nested too deeply to validate") from None
    finally:
        _deadline.at = float("inf")
    if error is None:
        return
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    message = error.message
    if len(message) > _MESSAGE_CHARS:
        message = f"{message[:_MESSAGE_CHARS]}..."
    raise failure(f"{what}{path}: {message}")


# (defaults field, the schema it must satisfy)
DEFAULT_FIELDS = (
    ("policy_parameters", "policy_parameters_schema"),
    ("policy_settings", "policy_settings_schema"),
)


def check_defaults(document: dict, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
    """Raise InvalidPolicy when a policy's default parameters or settings violate its own
    schema for them: every decision would then fail with InvalidInput.

    A missing required key is not a violation: a caller may give it on each request.
    """
    for field, schema_field in DEFAULT_FIELDS:
        schema, defaults = document.get(schema_field), document.get(field) or {}
        if not schema or not isinstance(schema, dict):
            continue
        validator = _validator(json.dumps(schema, sort_keys=True))
        _deadline.at = time.monotonic() + timeout
        try:
            errors = [e for e in validator.iter_errors(defaults) if e.validator != "required"]
        except _TooSlow:
            raise InvalidPolicy(f"{field}: validating the defaults took longer than "
                                f"{timeout:g} s") from None
        finally:
            _deadline.at = float("inf")
        if errors:
            error = errors[0]
            path = "".join(
                f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path
            )
            raise InvalidPolicy(
                f"{field}{path} (a default) does not match {schema_field}: "
                f"{error.message[:_MESSAGE_CHARS]}; every decision would fail"
            )
