"""aios-nunet-forward as a real process: interLink's calls over a Unix socket, carried to the
plugin process with its token, and nothing else carried."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import Process, free_port
from test_api import SEED_POD, a_pod, dms_jobs, interlink_request


class Forwarder:
    def __init__(self, tmp_path: Path, upstream: str, token: str, **env: str):
        self.socket = tmp_path / "sockets" / "nunet-plugin.sock"
        self.log = tmp_path / "forward.log"
        clean = {k: v for k, v in os.environ.items() if not k.startswith("NUNET_")}
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "interlink_nunet.forward"], stdout=out,
                stderr=subprocess.STDOUT,
                env={**clean, "NUNET_FORWARD_SOCKET": str(self.socket),
                     "NUNET_FORWARD_UPSTREAM": upstream, "NUNET_FORWARD_API_TOKEN": token,
                     "NUNET_FORWARD_TIMEOUT_SECONDS": "20", **env})
        deadline = time.monotonic() + 30
        while not self._accepts():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the forwarder did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
                return True
            except OSError:
                return False

    def interlink(self) -> httpx.Client:
        """A client that calls as interLink does: no credentials, over the socket."""
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)),
                            base_url="http://plugin", timeout=30)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture()
def forwarder(tmp_path: Path, plugin: Process) -> Iterator[Forwarder]:
    process = Forwarder(tmp_path, plugin.url, plugin.token)
    yield process
    process.stop()


def test_interlink_runs_a_pod_through_the_forwarder(forwarder: Forwarder, dms: Process) -> None:
    mode = stat.S_IMODE(os.stat(forwarder.socket).st_mode)
    assert mode == 0o660, oct(mode)
    with forwarder.interlink() as interlink:
        ping = interlink.request("GET", "/status", json=[])
        assert ping.status_code == 200 and ping.json()["status"] == "ok", ping.text
        assert ping.json()["resources"]["accelerators"], "the ping carries the node's GPUs"
        created = interlink.post("/create", json=interlink_request(SEED_POD))
        assert created.status_code == 200, created.text
        job_id = created.json()["PodJID"]
        assert dms_jobs(dms)[job_id]["payload"]["job"] == "busybox"
        status = interlink.request("GET", "/status", json=[SEED_POD])
        assert status.status_code == 200 and status.json()[0]["JID"] == job_id
        logs = interlink.request("GET", "/getLogs", json={
            "Namespace": "default", "PodUID": SEED_POD["metadata"]["uid"],
            "PodName": SEED_POD["metadata"]["name"], "ContainerName": "my-container",
            "Opts": {"Tail": 1}})
        assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")
        assert logs.text == "line 5 of busybox\n"
        deleted = interlink.post("/delete", json=SEED_POD)
        assert deleted.status_code == 200, deleted.text
        assert dms_jobs(dms)[job_id]["cancelled"] is True


def test_a_422_of_the_plugin_reaches_interlink_unchanged(forwarder: Forwarder) -> None:
    pod = a_pod("u-two")
    pod["spec"]["containers"].append(dict(pod["spec"]["containers"][0], name="second"))
    with forwarder.interlink() as interlink:
        refused = interlink.post("/create", json=[pod])
    assert refused.status_code == 422 and "one container" in refused.json()["detail"]


def test_only_interlinks_routes_are_carried(forwarder: Forwarder) -> None:
    with forwarder.interlink() as interlink:
        for path in ("/resources", "/node", "/metrics", "/healthz", "/create/../resources"):
            assert interlink.get(path).status_code == 404, path
        assert interlink.get("/create").status_code == 405
        assert interlink.post("/status", json=[]).status_code == 405


def test_a_wrong_token_is_refused_by_the_plugin_and_logged(tmp_path: Path,
                                                           plugin: Process) -> None:
    forwarder = Forwarder(tmp_path, plugin.url, "not-the-token", NUNET_FORWARD_SOCKET_MODE="666")
    try:
        assert stat.S_IMODE(os.stat(forwarder.socket).st_mode) == 0o666
        with forwarder.interlink() as interlink:
            assert interlink.post("/create", json=[a_pod("u-wrong")]).status_code == 401
    finally:
        forwarder.stop()
    assert "must equal the plugin's NUNET_PLUGIN_API_TOKEN" in forwarder.log.read_text()


def test_a_plugin_that_is_down_is_a_503_naming_it(tmp_path: Path) -> None:
    upstream = f"http://127.0.0.1:{free_port()}"
    forwarder = Forwarder(tmp_path, upstream, "t")
    try:
        with forwarder.interlink() as interlink:
            answer = interlink.request("GET", "/status", json=[])
        assert answer.status_code == 503
        assert f"the NuNet plugin at {upstream} cannot be reached" in answer.json()["detail"]
    finally:
        forwarder.stop()


@pytest.mark.parametrize(("env", "message"), [
    ({"NUNET_FORWARD_UPSTREAM": "http://p:4000"}, "NUNET_FORWARD_SOCKET: Field required"),
    ({"NUNET_FORWARD_SOCKET": "/tmp/s.sock", "NUNET_FORWARD_UPSTREAM": "p:4000",
      "NUNET_FORWARD_API_TOKEN": "t"}, "NUNET_FORWARD_UPSTREAM: Value error, must be an http"),
    ({"NUNET_FORWARD_SOCKET": "/tmp/s.sock", "NUNET_FORWARD_UPSTREAM": "http://p:4000"},
     "no token: set NUNET_FORWARD_API_TOKEN"),
    ({"NUNET_FORWARD_SOCKET": "/tmp/s.sock", "NUNET_FORWARD_UPSTREAM": "http://p:4000",
      "NUNET_FORWARD_API_TOKEN": "t", "NUNET_FORWARD_SOCKET_MODE": "0o777"},
     "NUNET_FORWARD_SOCKET_MODE: String should match pattern"),
])
def test_bad_settings_stop_the_start_naming_the_variable(env: dict, message: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NUNET_")}
    started = subprocess.run([sys.executable, "-m", "interlink_nunet.forward"],
                             capture_output=True, text=True, timeout=60, env={**clean, **env})
    assert started.returncode == 2, started.stderr
    assert message in started.stderr
