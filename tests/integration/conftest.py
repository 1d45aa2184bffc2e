"""Collection-level integration tests; the render helper lives in scripts/render_site.py."""

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

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "controlplane"))

from control_plane import ControlPlane, bin_dir
from render_site import COLLECTIONS, link_collection

# The longest modules first: parallel workers (make test-integration) take modules in
# collection order, so none of these starts last and runs on while the other workers idle.
LONGEST_FIRST = (
    "test_apply_mode.py", "test_render.py", "test_rbac.py", "test_monitoring_live.py",
    "test_interlink.py", "test_addons.py", "test_kubernetes_cluster.py", "test_local_run.py",
    "test_wiring.py", "test_render_apply.py", "test_node_membership.py",
    "test_monitoring_uninstall.py", "test_monitoring.py", "test_monitoring_controllers.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable within a module


def run_collection_module(module: Path, args: dict, check_mode: bool = False) -> dict:
    """Run one of the collection's modules as Ansible does, with JSON arguments."""
    link_collection()
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode,
                                       "_ansible_diff": True}}
    done = subprocess.run(
        [sys.executable, str(module)], input=json.dumps(payload), capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(COLLECTIONS)}, check=False,
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A policy runtime in every mode with its embedded database: (url, token)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = secrets.token_urlsafe(16)
    data = tmp_path_factory.mktemp("runtime")
    proc = subprocess.Popen(
        [sys.executable, "-m", "policy_runtime", "serve", "--port", str(port),
         "--embedded-db", str(data / "db")],
        env={**os.environ, "AIOS_API_TOKEN": token,
             "AIOS_RUN_MODES": "policies,clusters,controller", "AIOS_POOL_SIZE": "1"},
        stdout=(data / "log").open("w"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    yield url, token
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


@pytest.fixture(scope="session")
def control_plane_bin() -> Path:
    """The control plane's binaries (scripts/build_control_plane.sh builds them once)."""
    return bin_dir()


@pytest.fixture(scope="session")
def start_control_plane(control_plane_bin: Path, tmp_path_factory: pytest.TempPathFactory):
    """Start a fresh real control plane (stopped at the end of the session)."""
    started: list[ControlPlane] = []

    def start() -> ControlPlane:
        plane = ControlPlane(tmp_path_factory.mktemp("kube"), control_plane_bin).start()
        started.append(plane)
        return plane

    yield start
    for plane in started:
        plane.stop()


@pytest.fixture()
def kube(start_control_plane) -> Iterator[ControlPlane]:
    """A real control plane of one test: kube-apiserver, controllers, scheduler, kwok nodes."""
    plane = start_control_plane()
    yield plane
    plane.stop()
