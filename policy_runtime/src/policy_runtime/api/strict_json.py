"""Refuse JSON bodies the service could not store or carry, before any route sees them.

Python's JSON parser accepts more than the database and the sandbox can take:
- NaN, Infinity and -Infinity are not JSON: stored in a cluster they come back as
  ``null`` and break every later update of the document;
- a lone surrogate (``"\\ud800"``) is no text: BSON cannot encode it;
- integers beyond 64 bits do not fit BSON;
- documents nested deeper than ``MAX_DEPTH`` levels are refused by the database.
Each used to end in a 500. One middleware covers every route, so none can be added that
lets them in; the answer is a 422 naming the field. The checks cost one scan of the bytes
for the common body, which holds none of the tell-tale signs.
"""

from __future__ import annotations

import json
import re
from typing import Any

from policy_runtime.api.middleware import ASGIApp, Message, Receive, Scope, Send, send_json

# Requests that carry no body need no look.
_BODILESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
# MongoDB stores documents nested at most 100 levels deep.
MAX_DEPTH = 100
_INT64 = range(-(2**63), 2**63)
# Signs that a body may hold one of the problems; without them it is not parsed here.
_MAY_BE_NON_FINITE = (b"NaN", b"Infinity")
_MAY_BE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_MAY_BE_BIG_INT = re.compile(rb"\d{19}")


class _NonFinite:
    """Stands for a NaN/Infinity token while the body is searched for it."""

    def __init__(self, token: str) -> None:
        self.token = token


def _has_lone_surrogate(text: str) -> bool:
    # A valid pair was joined into one character by the parser: what is left is lone.
    return any("\ud800" <= char <= "\udfff" for char in text)


def _problem_of(value: Any) -> str | None:
    if isinstance(value, _NonFinite):
        return f"{value.token} is not a JSON number: send a finite number (or null)"
    if isinstance(value, str) and _has_lone_surrogate(value):
        return "the text holds a lone UTF-16 surrogate (\\ud800-\\udfff): send valid Unicode"
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        return f"integer {value} does not fit in 64 bits: send a smaller number or a string"
    return None


def find_problem(document: Any) -> tuple[list[str | int], str] | None:
    """The location of the first value in ``document`` that cannot be stored, and why."""
    pending: list[tuple[list[str | int], Any]] = [([], document)]
    while pending:
        path, value = pending.pop()
        if len(path) > MAX_DEPTH:
            return path[:MAX_DEPTH], f"the body is nested deeper than {MAX_DEPTH} levels"
        problem = _problem_of(value)
        if problem is not None:
            return path, problem
        if isinstance(value, dict):
            for key, item in value.items():
                if _has_lone_surrogate(key):
                    return [*path, key.encode("utf-8", "replace").decode()], _problem_of(key)
                pending.append(([*path, key], item))
        elif isinstance(value, list):
            pending.extend(([*path, index], item) for index, item in enumerate(value))
    return None


def _may_have_a_problem(body: bytes) -> bool:
    return (
        any(token in body for token in _MAY_BE_NON_FINITE)
        or _MAY_BE_SURROGATE.search(body) is not None
        or _MAY_BE_BIG_INT.search(body) is not None
        or body.count(b"[") + body.count(b"{") > MAX_DEPTH
    )


def unstorable_value(body: bytes) -> tuple[list[str | int], str] | None:
    """Where ``body`` holds a value the service cannot store or carry, and why, if it does.

    Bodies that are not JSON at all are left to the route, which reports them itself.
    """
    if not _may_have_a_problem(body):
        return None
    try:
        document = json.loads(body, parse_constant=_NonFinite)
    except (ValueError, RecursionError):
        return None
    return find_problem(document)


class StrictJsonMiddleware:
    """422 for a request body holding a value that cannot be stored; others pass unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODILESS:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        message: Message = {"type": "http.request", "more_body": True}
        while message.get("more_body", False):
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, receive, send)
                return
            chunks.append(message.get("body", b""))
        body = b"".join(chunks)
        found = unstorable_value(body)
        if found is not None:
            path, problem = found
            await send_json(send, 422, {"detail": [{
                "type": "unstorable_value", "loc": ["body", *path], "msg": problem,
            }]})
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
