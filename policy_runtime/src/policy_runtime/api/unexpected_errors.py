"""The last resort for a failure no handler expected: one log line, an id, a 500.

Starlette logs such a failure with its whole traceback, whose locals and chained causes
can run to hundreds of kilobytes for a one-kilobyte request, so a client could fill the
log at will. Here the log gets one line (the error id, the route, the exception type,
where it was raised, a bounded message) and the client the same id to quote.
"""

from __future__ import annotations

import logging
import secrets
import traceback

from policy_runtime.api.middleware import ASGIApp, Receive, Scope, Send, TrackedSend, send_json

log = logging.getLogger("policy_runtime.api")
_MAX_MESSAGE = 300


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "?"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"


class UnexpectedErrorMiddleware:
    """Answers 500 with an error id for anything that escaped every handler."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:  # the point of this middleware: nothing escapes unlogged
            error_id = secrets.token_hex(6)
            log.error(
                "unexpected error",
                extra={
                    "error_id": error_id,
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "error_type": type(exc).__name__,
                    "where": _where(exc),
                    "error": str(exc)[:_MAX_MESSAGE],
                },
            )
            if not tracked.started:
                await send_json(send, 500, {
                    "detail": f"internal error {error_id}: the service logged it under this id",
                })
