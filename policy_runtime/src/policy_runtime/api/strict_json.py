"""Refuse JSON bodies carrying NaN, Infinity or -Infinity, before any route sees them.

Python's JSON parser accepts these tokens, but they are not JSON: stored in a cluster
they come back as ``null``, break every later update of the document, and a policy
input holding one cannot be sent to a sandbox worker. One middleware covers every route,
so none can be added that lets them in; the answer is a 422 naming the field.
"""

from __future__ import annotations

import json
from typing import Any

from policy_runtime.api.middleware import ASGIApp, Message, Receive, Scope, Send, send_json

# Requests that carry no body need no look.
_BODILESS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})
_TOKENS = (b"NaN", b"Infinity")


class _NonFinite:
    """Stands for a NaN/Infinity token while the body is searched for it."""

    def __init__(self, token: str) -> None:
        self.token = token


def _path_of_non_finite(document: Any) -> tuple[list[str | int], str] | None:
    """The location and token of the first non-finite number in ``document``, if any."""
    pending: list[tuple[list[str | int], Any]] = [([], document)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, _NonFinite):
            return path, value.token
        if isinstance(value, dict):
            pending.extend(([*path, key], item) for key, item in value.items())
        elif isinstance(value, list):
            pending.extend(([*path, index], item) for index, item in enumerate(value))
    return None


def non_finite_number(body: bytes) -> tuple[list[str | int], str] | None:
    """Where ``body`` holds NaN/Infinity as a number (not inside a string), if it does.

    Bodies that are not JSON at all are left to the route, which reports them itself.
    """
    if not any(token in body for token in _TOKENS):  # the common case costs one scan
        return None
    try:
        document = json.loads(body, parse_constant=_NonFinite)
    except (ValueError, RecursionError):
        return None
    return _path_of_non_finite(document)


class StrictJsonMiddleware:
    """422 for a request body with a non-finite number; other bodies pass unchanged."""

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
        found = non_finite_number(body)
        if found is not None:
            path, token = found
            await send_json(send, 422, {"detail": [{
                "type": "non_finite_number",
                "loc": ["body", *path],
                "msg": f"{token} is not a JSON number: send a finite number (or null)",
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
