"""Shared fixtures: the seed's data, a stand-in DMS process and the plugin as a process."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
STANDIN = Path(__file__).parent / "dms_standin.py"


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited: {log.read_text()[-2000:]}")
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not start: {log.read_text()[-2000:]}")


class Process:
    """A child process serving HTTP on 127.0.0.1:<port>, started and stopped by tests."""

    def __init__(self, command: list[str], port: int, log: Path, env: dict | None = None):
        self.command, self.port, self.log, self.env = command, port, log, env
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Process:
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **(self.env or {})})
        wait_until_up(self.url, self.proc, self.log)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)


@pytest.fixture()
def dms(tmp_path: Path) -> Iterator[Process]:
    port = free_port()
    process = Process([sys.executable, str(STANDIN), "--port", str(port),
                       "--state", str(tmp_path / "dms.json"),
                       "--peers", str(FIXTURES / "seed_peers.json")],
                      port, tmp_path / "dms.log").start()
    yield process
    process.stop()


def start_plugin(tmp_path: Path, dms_url: str, **env: str) -> Process:
    port = free_port()
    token = env.pop("token", None) or secrets.token_urlsafe(16)
    process = Process([sys.executable, "-m", "interlink_nunet"], port, tmp_path / "plugin.log", {
        "NUNET_PLUGIN_PORT": str(port),
        "NUNET_PLUGIN_API_TOKEN": token,
        "NUNET_PLUGIN_DMS_URL": dms_url,
        "NUNET_PLUGIN_DMS_RETRIES": "1",
        "NUNET_PLUGIN_DMS_TIMEOUT_SECONDS": "3",
        "NUNET_PLUGIN_STORE_PATH": str(tmp_path / "jobs.sqlite"),
        "NUNET_PLUGIN_PEERS_CACHE_SECONDS": "0",
        **env,
    })
    process.token = token
    return process.start()


@pytest.fixture()
def plugin(tmp_path: Path, dms: Process) -> Iterator[Process]:
    """The plugin as a process against the stand-in DMS, with a random token."""
    process = start_plugin(tmp_path, dms.url)
    yield process
    process.stop()


def client(process: Process, token: str | None = None) -> httpx.Client:
    token = token if token is not None else process.token
    return httpx.Client(base_url=process.url, timeout=30,
                        headers={"Authorization": f"Bearer {token}"} if token else {})
