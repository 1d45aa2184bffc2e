"""How failures become HTTP answers: one table, used by our routes and the upstream aliases."""

from __future__ import annotations

from bson.errors import InvalidDocument
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from pymongo.errors import ExecutionTimeout, OperationFailure, PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException

from policy_runtime.clusters.operators import OperatorError, RegexRefused
from policy_runtime.clusters.query_limits import QueryTimeout
from policy_runtime.clusters.store import ClusterConflict, ClusterNotFound, InvalidCluster
from policy_runtime.errors import PolicyRuntimeError, Timeout
from policy_runtime.executors.client import RemoteExecutionError
from policy_runtime.executors.registry import (
    ExecutorConflict,
    ExecutorNotFound,
    InvalidExecutor,
)
from policy_runtime.governance.actions import UnknownAction
from policy_runtime.governance.mgmt import BadCommand
from policy_runtime.governance.precheck import MissingClusterId, PolicyDenied, UnknownPolicy
from policy_runtime.governance.stability import NoStabilityPolicy, NoStabilityResult
from policy_runtime.package import ArchiveError, ArchiveTooLarge
from policy_runtime.sandbox.pool import PoolBusy, PoolClosed
from policy_runtime.service import BadPolicyRequest, PolicyNotFound, RequestTooLarge
from policy_runtime.store.policies import PolicyConflict

# Most specific first: the first matching class decides the status.
ERROR_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (PolicyDenied, 403),
    (NoStabilityPolicy, 409),
    (NoStabilityResult, 404),
    (BadCommand, 400),
    (ExecutorNotFound, 404),
    (ExecutorConflict, 409),
    (InvalidExecutor, 422),
    (RemoteExecutionError, 502),
    (UnknownAction, 400),
    (UnknownPolicy, 400),
    (MissingClusterId, 400),
    (ClusterNotFound, 404),
    (ClusterConflict, 409),
    (InvalidCluster, 422),
    (RegexRefused, 422),
    (OperatorError, 400),
    (QueryTimeout, 504),
    (PolicyNotFound, 404),
    (PolicyConflict, 409),
    (RequestTooLarge, 413),
    (ArchiveTooLarge, 413),
    (ArchiveError, 422),
    (BadPolicyRequest, 422),
    (Timeout, 504),
    (PolicyRuntimeError, 422),
    (PoolBusy, 503),
    (PoolClosed, 503),
    (ExecutionTimeout, 504),
    (InvalidDocument, 422),
    (PyMongoError, 503),
)

# Codes with which the database refuses a request itself (a filter, a projection, a
# regex it cannot use): the client's mistake, a 400 naming it, not "unavailable".
_BAD_REQUEST_CODES = frozenset({
    2,  # BadValue, e.g. "$and argument must be a non-empty array", "$size: -1"
    9,  # FailedToParse
    14,  # TypeMismatch
    22,  # InvalidBSON
    31253, 31254,  # projection: mixed inclusion and exclusion
    40352, 40353,  # FieldPath: empty, or starting with "$"
    51091,  # invalid regular expression
    51246,  # positional projection without a matching query field
})


def _refused_by_database(exc: BaseException) -> bool:
    return (isinstance(exc, OperationFailure) and not isinstance(exc, ExecutionTimeout)
            and exc.code in _BAD_REQUEST_CODES)


def status_for(exc: BaseException) -> int:
    if _refused_by_database(exc):
        return 400
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def message_for(exc: BaseException) -> str:
    if _refused_by_database(exc):
        reason = (exc.details or {}).get("errmsg") or str(exc)
        return f"the database refused the request: {str(reason)[:300]}"
    if isinstance(exc, ExecutionTimeout):
        return "the query ran past its time limit and was stopped: narrow the filter"
    if isinstance(exc, InvalidDocument):
        return f"the document cannot be stored: {str(exc)[:300]}"
    if isinstance(exc, PyMongoError):
        return "the database is unavailable; retry shortly"
    return str(exc)


def error_body(exc: BaseException) -> dict:
    """Typed policy errors keep the evaluation envelope; others are a plain detail."""
    if isinstance(exc, PolicyRuntimeError):
        return {"ok": False, "error": exc.to_dict()}
    if isinstance(exc, PolicyDenied):
        return exc.decision.denial()
    if isinstance(exc, InvalidCluster) and exc.errors:
        return {"detail": message_for(exc), "errors": exc.errors}
    return {"detail": message_for(exc)}


async def body_parse_error(request: Request, exc: StarletteHTTPException) -> Response:
    """FastAPI answers 400 for any body it fails to parse; JSON nested beyond the parser's
    recursion limit is invalid input like any other JSON error, so it is a 422 too."""
    if isinstance(exc.__cause__, RecursionError):
        return JSONResponse({"detail": "the JSON body is nested too deeply"}, status_code=422)
    return await http_exception_handler(request, exc)


def install_handlers(app: FastAPI) -> None:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(exc), status_code=status_for(exc))

    app.add_exception_handler(StarletteHTTPException, body_parse_error)

    for cls, _ in ERROR_STATUS:
        app.add_exception_handler(cls, handle)
