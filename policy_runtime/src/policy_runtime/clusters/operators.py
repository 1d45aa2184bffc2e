"""The MongoDB operators clients may use in cluster queries and updates.

Query filters and update documents come straight from API clients and go to MongoDB, so
every ``$``-name at any depth must be on an allow-list: no server-side JavaScript
(``$where``, ``$function``, ``$accumulator``), no aggregation expressions (``$expr``), no
``$jsonSchema``; ``$regex`` patterns only if they run in linear time (safe_regex.py), at
most MAX_REGEXES of them per filter, never inside ``$in``/``$nin``/``$all`` and never as
BSON regular expressions. Field names never start with ``$`` and never contain empty path
segments. Violations raise OperatorError (RegexRefused for patterns) naming the operator
and where it was found.
"""

from __future__ import annotations

from typing import Any

from policy_runtime.clusters.safe_regex import MAX_PATTERN_LENGTH, UnsafeRegex, check_regex

QUERY_OPERATORS = frozenset({
    # comparison
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin",
    # logical
    "$and", "$or", "$nor", "$not",
    # element
    "$exists", "$type",
    # array
    "$all", "$elemMatch", "$size",
    # evaluation, restricted
    "$regex", "$options",
})
UPDATE_OPERATORS = frozenset({
    "$set", "$unset", "$inc", "$mul", "$min", "$max", "$push", "$addToSet", "$pull",
    "$pullAll", "$pop",
})
# Modifiers allowed inside $push / $addToSet values.
PUSH_MODIFIERS = frozenset({"$each", "$position", "$slice", "$sort"})
MAX_REGEX_LENGTH = MAX_PATTERN_LENGTH
MAX_REGEXES = 8
# Operators whose list holds values to compare, where a {$regex: ...} is no pattern.
_VALUE_LISTS = frozenset({"$in", "$nin", "$all"})
MAX_DEPTH = 32
# An update path may address array elements by index ("nodes.nodeData.3.status"); a
# far index would pad the array with nulls (40 bytes of request, megabytes of document).
MAX_ARRAY_INDEX = 10_000
# BSON stores integers in 64 bits; larger ones cannot be stored or compared.
_INT64 = (-(2**63), 2**63 - 1)


class OperatorError(ValueError):
    """A filter or update uses something outside the allow-list."""


class RegexRefused(OperatorError):
    """A ``$regex`` that could keep the database busy (or is no regex the filter can use)."""


def _check_scalar(value: Any, where: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not (
        _INT64[0] <= value <= _INT64[1]
    ):
        raise OperatorError(f"{where}: integer {value} does not fit in 64 bits")


def _check_field(name: str, where: str) -> None:
    if not name or name.startswith("$") or "" in name.split(".") or "\0" in name:
        raise OperatorError(f"{where}: {name!r} is not a valid field name")


def check_filter(value: Any, where: str = "filter", depth: int = 0) -> None:
    """Raise OperatorError unless ``value`` uses only allowed query operators."""
    _check_filter(value, where, depth)
    if depth == 0 and (count := _count_regexes(value)) > MAX_REGEXES:
        raise RegexRefused(f"{where}: {count} $regex conditions; the limit is {MAX_REGEXES}")


def _count_regexes(value: Any) -> int:
    if isinstance(value, list):
        return sum(_count_regexes(item) for item in value)
    if isinstance(value, dict):
        return sum((key == "$regex") + _count_regexes(item) for key, item in value.items())
    return 0


def _check_filter(value: Any, where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise OperatorError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_filter(item, f"{where}[{index}]", depth + 1)
        return
    if not isinstance(value, dict):
        _check_scalar(value, where)
        return
    for key, item in value.items():
        if not isinstance(key, str):
            raise OperatorError(f"{where}: keys must be strings")
        if key in ("$regex", "$options", "$regularExpression"):
            _check_regex(value, key, f"{where}.{key}")
        if key in _VALUE_LISTS and isinstance(item, list):
            for index, element in enumerate(item):
                if isinstance(element, dict) and "$regex" in element:
                    _check_regex(element, "$regex", f"{where}.{key}[{index}].$regex")
                    raise RegexRefused(
                        f"{where}.{key}[{index}]: $regex is not allowed inside {key}; use "
                        "$or of {field: {$regex: ...}} instead"
                    )
        if key.startswith("$"):
            if key not in QUERY_OPERATORS:
                raise OperatorError(
                    f"{where}: operator {key} is not allowed; allowed: "
                    + ", ".join(sorted(QUERY_OPERATORS))
                )
        else:
            _check_field(key, where)
        _check_filter(item, f"{where}.{key}", depth + 1)


def _check_regex(condition: dict, key: str, where: str) -> None:
    """``condition`` holds ``key``: $regex (with its $options), $options, or a BSON regex."""
    if key == "$regularExpression":
        raise RegexRefused(f"{where}: BSON regular expressions are not accepted; use "
                           "{field: {$regex: pattern, $options: flags}}")
    if "$regex" not in condition:
        raise RegexRefused(f"{where}: $options needs a $regex beside it")
    if key == "$regex":
        try:
            check_regex(condition["$regex"], condition.get("$options", ""))
        except UnsafeRegex as exc:
            raise RegexRefused(f"{where}: {exc}") from None


def check_update(update: Any) -> None:
    """Raise OperatorError unless ``update`` is ``{"$op": {field: value}, ...}`` of allowed ops."""
    if not isinstance(update, dict) or not update:
        raise OperatorError("update: must be a non-empty object of update operators, e.g. "
                            '{"$set": {"tags": ["gpu"]}}')
    for operator, fields in update.items():
        if operator not in UPDATE_OPERATORS:
            raise OperatorError(
                f"update: operator {operator} is not allowed; allowed: "
                + ", ".join(sorted(UPDATE_OPERATORS))
            )
        if not isinstance(fields, dict) or not fields:
            raise OperatorError(f"update.{operator}: must be a non-empty object of fields")
        for field, value in fields.items():
            _check_field(field, f"update.{operator}")
            _check_indexes(field, f"update.{operator}")
            if field == "id" or field.startswith("id."):
                raise OperatorError(f"update.{operator}: the cluster id cannot be changed")
            push = operator in ("$push", "$addToSet")
            _check_value(value, f"update.{operator}.{field}", push=push)


def _check_indexes(field: str, where: str) -> None:
    for part in field.split("."):
        if part.isdigit() and int(part) > MAX_ARRAY_INDEX:
            raise OperatorError(
                f"{where}: array index {part} in {field!r} is beyond {MAX_ARRAY_INDEX}; "
                "address an existing element, or $push to append"
            )


def _check_value(value: Any, where: str, push: bool = False, depth: int = 0) -> None:
    """Values written into documents: no $-keys (but $push modifiers), no dotted keys."""
    if depth > MAX_DEPTH:
        raise OperatorError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{where}[{index}]", depth=depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            if push and depth == 0 and key in PUSH_MODIFIERS:
                _check_value(item, f"{where}.{key}", depth=depth + 1)
                continue
            if not isinstance(key, str) or key.startswith("$") or "." in key or not key:
                raise OperatorError(f"{where}: key {key!r} may not start with $ or contain '.'")
            _check_value(item, f"{where}.{key}", depth=depth + 1)
    else:
        _check_scalar(value, where)


def check_document(document: Any) -> None:
    """Documents stored as they are (create): no $-keys and no dotted keys at any depth."""
    _check_value(document, "document")
