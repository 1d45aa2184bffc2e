"""Client queries (registry, policy, graph and function filters) under one time limit.

The limit goes to the database as maxTimeMS, so a query past it is stopped there too and
does not keep working after its caller has been answered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pymongo
from pymongo.errors import ExecutionTimeout, NetworkTimeout, OperationFailure

from policy_runtime.clusters.operators import OperatorError

T = TypeVar("T")


class QueryTimeout(Exception):
    """A client's query ran past its server-side time limit and was stopped."""


class InvalidQuery(OperatorError):
    """The database refused a client's query."""


def bounded(seconds: float, run: Callable[[], T]) -> T:
    """``run()`` with the query time limit; QueryTimeout past it, InvalidQuery when the
    database refuses the filter (the client's fault, not an outage)."""
    try:
        with pymongo.timeout(seconds):
            return run()
    except (ExecutionTimeout, NetworkTimeout):
        raise QueryTimeout(
            f"the query ran longer than its limit of {seconds:g} s and was stopped; "
            "narrow the filter"
        ) from None
    except OperationFailure as exc:
        reason = (exc.details or {}).get("errmsg") or str(exc)
        raise InvalidQuery(f"filter: the database refused the query: {reason}") from None
