"""An assets registry stand-in: a local HTTP server with code archives, good and hostile.

Upstream AIOS policy records carry the URL of their code archive; these tests serve such
archives (and redirects, oversized, slow and non-archive answers) from 127.0.0.1.
"""

from __future__ import annotations

import http.server
import io
import secrets
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from typing import ClassVar

import pytest
from conftest import RuntimeServer
from policy_sources import eval_body

from policy_runtime.embedded_db import EmbeddedDatabase

# Limits of the runtime that may fetch from this server.
MAX_BYTES = 64 * 1024
TIMEOUT_SECONDS = 1.5

ALLOW_SOURCE = eval_body("return {'allowed': input_data.get('gpus', 0) >= parameters['min']}")
DENY_SOURCE = eval_body("return {'allowed': False}")


def zip_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def tar_xz_of(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class Assets(http.server.BaseHTTPRequestHandler):
    """GET paths: the archives and the hostile answers; every request is recorded."""

    seen: ClassVar[list[dict[str, str]]] = []
    files: ClassVar[dict[str, bytes]] = {
        "/policy.zip": zip_of({"code/function.py": ALLOW_SOURCE}),
        "/deny.zip": zip_of({"code/function.py": DENY_SOURCE}),
        "/policy.tar.xz": tar_xz_of({"code/function.py": ALLOW_SOURCE}),
        "/not-an-archive.zip": b"<html>the registry's login page</html>\n" * 10,
        "/no-function.zip": zip_of({"code/other.py": ALLOW_SOURCE}),
        "/bomb.zip": zip_of({"code/function.py": "#" * (32 * 1024 * 1024)}),
    }

    def do_GET(self) -> None:
        Assets.seen.append({"path": self.path, "host": self.headers.get("Host", "")})
        path = self.path.split("?", 1)[0]
        if path in self.files:
            self._send(200, self.files[path])
        elif path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/policy.zip")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/oversized":
            self._send(200, b"\0" * (MAX_BYTES + 1))
        elif path == "/oversized-undeclared":
            # No Content-Length: the size is only known by counting.
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(4):
                self.wfile.write(b"\0" * MAX_BYTES)
            self.close_connection = True
        elif path == "/slow":
            # A byte now and then: each read is quick, the whole is not.
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                try:
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.1)
        elif path == "/stalled":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            time.sleep(TIMEOUT_SECONDS * 4)
        else:
            self._send(404, b"not found")

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def assets() -> Iterator[str]:
    """The base URL of the assets registry stand-in."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Assets)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def fetching_server(
    embedded_db: EmbeddedDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeServer]:
    """A runtime that may fetch code archives from 127.0.0.1, with small limits."""
    log_path = tmp_path_factory.mktemp("fetching-server") / "server.log"
    runtime = RuntimeServer(
        embedded_db.uri,
        secrets.token_urlsafe(32),
        log_path,
        AIOS_POLICY_ARCHIVE_ALLOWED_HOSTS="127.0.0.1",
        AIOS_POLICY_ARCHIVE_MAX_BYTES=str(MAX_BYTES),
        AIOS_POLICY_ARCHIVE_TIMEOUT_SECONDS=str(TIMEOUT_SECONDS),
    ).start()
    yield runtime
    runtime.stop()
