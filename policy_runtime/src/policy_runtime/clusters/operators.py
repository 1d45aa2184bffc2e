"""The MongoDB operators clients may use in cluster queries and updates.

Query filters and update documents come straight from API clients and go to MongoDB, so
every ``$``-name at any depth must be on an allow-list: no server-side JavaScript
(``$where``, ``$function``, ``$accumulator``), no aggregation expressions (``$expr``), no
``$jsonSchema``; ``$regex`` patterns are length-capped. Field names never start with
``$`` and never contain empty path segments. Violations raise OperatorError naming the
operator and where it was found.
"""

from __future__ import annotations

from typing import Any

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
MAX_REGEX_LENGTH = 256
REGEX_OPTIONS = frozenset("imsx")
MAX_DEPTH = 32
# BSON stores integers in 64 bits; larger ones cannot be stored or compared.
_INT64 = (-(2**63), 2**63 - 1)


class OperatorError(ValueError):
    """A filter or update uses something outside the allow-list."""


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
    if depth > MAX_DEPTH:
        raise OperatorError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        for index, item in enumerate(value):
            check_filter(item, f"{where}[{index}]", depth + 1)
        return
    if not isinstance(value, dict):
        _check_scalar(value, where)
        return
    for key, item in value.items():
        if not isinstance(key, str):
            raise OperatorError(f"{where}: keys must be strings")
        if key.startswith("$"):
            if key not in QUERY_OPERATORS:
                raise OperatorError(
                    f"{where}: operator {key} is not allowed; allowed: "
                    + ", ".join(sorted(QUERY_OPERATORS))
                )
            if key == "$regex":
                _check_regex(item, value.get("$options", ""), f"{where}.$regex")
            if key == "$options" and not set(str(item)) <= REGEX_OPTIONS:
                raise OperatorError(f"{where}.$options: only i, m, s and x are allowed")
        else:
            _check_field(key, where)
        check_filter(item, f"{where}.{key}", depth + 1)


def _check_regex(pattern: Any, options: Any, where: str) -> None:
    if not isinstance(pattern, str):
        raise OperatorError(f"{where}: the pattern must be a string")
    if len(pattern) > MAX_REGEX_LENGTH:
        raise OperatorError(
            f"{where}: pattern of {len(pattern)} characters; the limit is {MAX_REGEX_LENGTH}"
        )


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
            if field == "id" or field.startswith("id."):
                raise OperatorError(f"update.{operator}: the cluster id cannot be changed")
            push = operator in ("$push", "$addToSet")
            _check_value(value, f"update.{operator}.{field}", push=push)


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
