"""Pure ASGI middleware: bearer-token auth on every route, and request size limits.

Auth is middleware rather than a route dependency so that no route can be added
without it (the OpenAPI docs and unknown paths included); only the paths in ``exempt``
are open.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pymongo.errors import PyMongoError
from starlette.concurrency import run_in_threadpool

from policy_runtime.auth.permissions import Permission
from policy_runtime.auth.principal import BOOTSTRAP, SCOPE_KEY, Principal, current_token_name
from policy_runtime.auth.tokens import token_hash

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_json(send: Send, status: int, body: dict, headers: list | None = None) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


_UNAUTHORIZED = {
    "detail": "missing, invalid, expired or revoked bearer token: "
    "send 'Authorization: Bearer <token>'"
}


class BearerAuthMiddleware:
    """Who is calling: 401 unless ``Authorization: Bearer <token>`` is a live token.

    The bootstrap token (AIOS_API_TOKEN) is compared in constant time and is an admin;
    any other token is looked up by its SHA-256 in the token store (``state.tokens``,
    cached for at most a second). The caller is left in the ASGI scope for the routes'
    permission and scope checks and the audit record of writes (api/guard.py).
    """

    def __init__(
        self, app: ASGIApp, token: str | None, exempt: frozenset[str],
        state: Any = None, docs_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None
        self.exempt = exempt
        self.state = state
        self.docs_paths = docs_paths

    async def _principal(self, presented: bytes) -> Principal | None:
        if self.token is not None and hmac.compare_digest(presented, self.token):
            return BOOTSTRAP
        tokens = getattr(self.state, "tokens", None)
        if tokens is None or not presented:
            return None
        digest = token_hash(presented)
        fresh, document = tokens.cached(digest)
        if not fresh:
            document = await run_in_threadpool(tokens.fetch, digest)
        return tokens.principal(document)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        scheme, _, presented = header.partition(b" ")
        principal = None
        if scheme.lower() == b"bearer":
            try:
                principal = await self._principal(presented.strip())
            except PyMongoError:
                # Fail closed, as every route that needs the database does while it is away.
                await send_json(send, 503, {
                    "detail": "the database is unavailable: the token cannot be checked"})
                return
        if principal is None:
            await send_json(send, 401, _UNAUTHORIZED, [(b"www-authenticate", b"Bearer")])
            return
        if scope["path"] in self.docs_paths and Permission.DOCS_READ not in principal.permissions:
            refusal = principal.lacks(Permission.DOCS_READ)
            await send_json(send, 403, {"detail": str(refusal), "permission": refusal.permission})
            return
        scope[SCOPE_KEY] = principal
        reset = current_token_name.set(principal.name)
        try:
            await self.app(scope, receive, send)
        finally:
            current_token_name.reset(reset)


class _BodyTooLarge(BaseException):
    pass


class TrackedSend:
    """``send`` that notes whether the response has started: once it has, an error can no
    longer be answered with a response of its own."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.started = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class BodySizeLimitMiddleware:
    """413 for bodies over ``max_bytes``, by Content-Length or by counting the stream."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> dict:
        return {
            "detail": f"request body exceeds {self.max_bytes} bytes (AIOS_MAX_BODY_BYTES)"
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await send_json(send, 413, self._too_large())
                return
        received = 0
        tracked = TrackedSend(send)

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, counting_receive, tracked)
        except _BodyTooLarge:
            if not tracked.started:
                await send_json(send, 413, self._too_large())
