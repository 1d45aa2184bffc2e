"""``aios-policy serve``: start-up checks, the embedded database, shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import RuntimeServer, free_port
from policy_sources import ALLOW_ALL


def serve(*args: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AIOS_")}
    return subprocess.Popen(
        [sys.executable, "-m", "policy_runtime", "serve", *args],
        env={**clean, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,
    )


def wait_healthy(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("the server never became healthy")


def test_refuses_to_start_without_a_token() -> None:
    proc = serve("--port", str(free_port()))
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "no API token configured: set AIOS_API_TOKEN or AIOS_API_TOKEN_FILE" in output


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"AIOS_RUN_MODES": "policies,nonsense"}, "run_modes"),
        ({"AIOS_PORT": "99999"}, "port"),
        ({"AIOS_API_TOKEN_FILE": "/nonexistent/token"}, "AIOS_API_TOKEN_FILE=/nonexistent/token"),
    ],
)
def test_bad_settings_name_the_setting(env: dict[str, str], needle: str) -> None:
    proc = serve(env=env)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2 and needle in output, output


def test_embedded_database_insecure_mode_and_clean_shutdown(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data = tmp_path / "db"
    proc = serve("--port", str(port), "--embedded-db", str(data), "--insecure-no-auth")
    try:
        wait_healthy(url, proc)
        body = {"name": "p", "version": "v1", "code": ALLOW_ALL}
        assert httpx.post(f"{url}/policies", json=body).status_code == 201
        children = subprocess.run(
            ["pgrep", "-P", str(proc.pid), "-f", "policy_runtime.embedded_db"],
            capture_output=True, text=True,
        ).stdout.split()
        assert len(children) == 1, "the embedded database runs as its own process"
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert "AUTHENTICATION IS OFF" in output
    assert not Path(f"/proc/{children[0]}").exists(), "the database stopped with the server"

    # The data directory keeps what was published.
    proc = serve("--port", str(port), "--embedded-db", str(data), "--insecure-no-auth")
    try:
        wait_healthy(url, proc)
        assert httpx.get(f"{url}/policies/p:v1").json()["code"] == ALLOW_ALL
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_token_from_file(embedded_db, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-token-0123456789\n")
    server = RuntimeServer(
        embedded_db.uri, "", tmp_path / "log", AIOS_API_TOKEN_FILE=str(token_file)
    )
    server._env.pop("AIOS_API_TOKEN")
    server.start()
    try:
        assert httpx.get(f"{server.url}/policies").status_code == 401
        with server.client("file-token-0123456789") as client:
            assert client.get("/policies").status_code == 200
    finally:
        server.stop()


def test_health_reports_an_unreachable_database(tmp_path: Path) -> None:
    from policy_runtime.embedded_db import EmbeddedDatabase

    database = EmbeddedDatabase(tmp_path / "db").start()
    server = RuntimeServer(database.uri, "t0ken-for-health", tmp_path / "log").start()
    try:
        database.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = httpx.get(f"{server.url}/healthz")
            if response.status_code == 503:
                break
            time.sleep(0.2)
        assert response.json() == {"status": "unavailable", "database": "down"}
        with server.client() as client:
            listing = client.get("/policies")
        assert listing.status_code == 503
        assert listing.json() == {"detail": "the database is unavailable; retry shortly"}
    finally:
        server.stop()
        database.stop()
