"""Request bodies parsed by pydantic directly, for the routes on the decision hot path.

FastAPI's own body handling solves a dependency graph per request; for a decision that
costs more than evaluating the policy. These routes read the body themselves, validate
it with ``model_validate_json`` and report errors exactly as FastAPI would (422 with
``detail[].loc`` starting at ``body``); ``openapi_extra`` keeps the body documented.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def request_body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


async def read_body(request: Request, model: type[Model]) -> Model:
    """The body as ``model``; RequestValidationError (422) naming where it is wrong."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        for error in errors:
            error.pop("url", None)  # FastAPI's own 422s carry no documentation links
        raise RequestValidationError(errors) from None
