"""``aios-policy serve``: settings from env and flags, optional embedded database, uvicorn.

The HTTP/1.1 protocol is uvicorn's httptools one with the bounds uvicorn lacks: a request
head (request line and headers) larger than ``AIOS_MAX_HEADER_BYTES`` or with more than
``AIOS_MAX_HEADERS`` fields answers 431 before it is buffered further, and a client that
does not send a whole request within ``AIOS_REQUEST_READ_TIMEOUT_SECONDS`` of starting it
(or of connecting) is disconnected (408 while the head is incomplete). httptools buffers
header values without a limit and uvicorn times out only idle keep-alive connections;
h11 bounds the head but answers a bare 400 and has no read timeout either.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import httptools
import uvicorn
from pydantic import ValidationError
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from policy_runtime import logs
from policy_runtime.api.app import create_app
from policy_runtime.config import ConfigError, Settings
from policy_runtime.embedded_db import EmbeddedDatabase

log = logging.getLogger("policy_runtime.server")


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        "host": args.host,
        "port": args.port,
        "run_modes": args.modes,
        "mongo_uri": args.mongo_uri,
        "insecure_no_auth": True if args.insecure_no_auth else None,
    }
    return Settings(**{k: v for k, v in flags.items() if v is not None})


class _Refused(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class BoundedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with head size, header count and read time limits."""

    max_head_bytes = 64 * 1024
    max_headers = 100
    read_timeout = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_bytes = 0  # read while the head was incomplete
        self._parsed_bytes = 0  # of the head, as the parser reported it
        self._in_head = True
        self._read_timer: asyncio.TimerHandle | None = None
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(_Refused(
                408, "Request Timeout",
                f"the request was not received within {self.read_timeout:g} s "
                "(AIOS_REQUEST_READ_TIMEOUT_SECONDS)",
            ))
        else:
            # the body is overdue: the route sees a disconnect and nothing is answered
            self.transport.close()

    def _refuse(self, refusal: _Refused) -> None:
        self.logger.warning("refused a request: %s", refusal)
        body = json.dumps({"detail": str(refusal)}).encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s"
            % (refusal.status, refusal.reason.encode(), len(body), body)
        )
        self.transport.close()

    def _head_too_large(self) -> _Refused:
        return _Refused(
            431, "Request Header Fields Too Large",
            f"the request line and headers exceed {self.max_head_bytes} bytes "
            "(AIOS_MAX_HEADER_BYTES)",
        )

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(self._head_too_large())

    def send_400_response(self, msg: str) -> None:
        # the parser reports an error raised in a callback as HttpParserError; uvicorn
        # then answers 400: our refusals answer their own status instead
        error = sys.exc_info()[1]
        refusal = error.__context__ if isinstance(error, httptools.HttpParserError) else None
        if isinstance(refusal, _Refused):
            self._refuse(refusal)
        else:
            super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._parsed_bytes = 0
        self._arm_read_timer()

    def _parsed(self, count: int) -> None:
        # a head that arrives in one read is parsed before data_received counts it
        self._parsed_bytes += count
        if self._parsed_bytes > self.max_head_bytes:
            raise self._head_too_large()

    def on_url(self, url: bytes) -> None:
        self._parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self.headers) >= self.max_headers:
            raise _Refused(
                431, "Request Header Fields Too Large",
                f"the request has more than {self.max_headers} header fields (AIOS_MAX_HEADERS)",
            )
        self._parsed(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_read_timer()
        super().on_message_complete()


def bounded_protocol(settings: Settings) -> type[BoundedHttpProtocol]:
    """The protocol class with the limits of ``settings``."""
    return type(
        "BoundedHttpProtocol",
        (BoundedHttpProtocol,),
        {
            "max_head_bytes": settings.max_header_bytes,
            "max_headers": settings.max_headers,
            "read_timeout": settings.request_read_timeout_seconds,
        },
    )


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        token = settings.resolve_token()
        settings.provisioned_tokens()  # a bad tokens file stops the start here, naming it
    except ValidationError as exc:
        print(f"aios-policy serve: invalid setting:\n{exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"aios-policy serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if token is None:
        log.warning(
            "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach %s:%s can publish "
            "and run policies. Use this for local experiments only.",
            settings.host,
            settings.port,
        )
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal to
    # the handler it found; this one turns it into a clean exit 0, after the finally
    # below has stopped the embedded database. It also covers signals during start-up.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    embedded = None
    try:
        if args.embedded_db:
            embedded = EmbeddedDatabase(Path(args.embedded_db)).start()
            settings = settings.model_copy(update={"mongo_uri": embedded.uri})
            log.info("embedded database on port %s, data in %s", embedded.port, args.embedded_db)
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=settings.access_log,
            timeout_graceful_shutdown=30,
            http=bounded_protocol(settings),
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0
