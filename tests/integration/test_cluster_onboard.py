"""cluster_onboard end to end: file of nodes -> populated document -> a real runtime."""

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
from render_site import COLLECTIONS, REPO, link_collection

MODULE = REPO / "plugins" / "modules" / "cluster_onboard.py"
NODES = REPO / "tests" / "unit" / "fixtures" / "kubectl_get_nodes.json"
SEED = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json").read_text())
CONFIG = {k: SEED[k] for k in ("id", "regionId", "config", "tags", "clusterMetadata")}


def run_module(args: dict, check_mode: bool = False) -> dict:
    link_collection()
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode,
                                       "_ansible_diff": True}}
    done = subprocess.run(
        [sys.executable, str(MODULE)], input=json.dumps(payload), capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(COLLECTIONS)}, check=False,
    )
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
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


def test_populated_file_idempotence_and_check_mode(tmp_path: Path) -> None:
    args = {"config": CONFIG, "nodes_from": "file", "nodes_file": str(NODES),
            "dest": str(tmp_path)}
    preview = run_module(args, check_mode=True)
    assert preview["changed"] is True and not Path(preview["path"]).exists()
    first = run_module(args)
    assert first["changed"] is True and first["registered"] == "none"
    assert json.loads(Path(first["path"]).read_text()) == first["cluster"]
    assert Path(first["path"]).name == "cluster-west-vision-001_populated.json"
    assert first["cluster"]["nodes"]["count"] == 5 and first["cluster"]["gpus"]["count"] == 3
    warning = "node aios-worker-3: annotation gpu.aios/info is not JSON"
    assert warning in json.dumps(first["warnings"])
    assert first["defaults"] == {"storage.disks": 1, "network.txBandwidth": 0,
                                 "network.rxBandwidth": 0}
    assert run_module(args)["changed"] is False


def test_invalid_config_names_the_field(tmp_path: Path) -> None:
    config = {**CONFIG, "clusterMetadata": {"name": "x"}}
    result = run_module({"config": config, "nodes_from": "file", "nodes_file": str(NODES),
                         "dest": str(tmp_path)})
    assert result["failed"] is True and "clusterMetadata.description" in result["msg"]
    missing = run_module({"config": CONFIG, "nodes_from": "file",
                          "nodes_file": str(tmp_path / "absent.json"), "dest": str(tmp_path)})
    assert missing["failed"] is True and "cannot read nodes file" in missing["msg"]


def test_onboard_creates_then_changes_nothing_then_updates(
    runtime: tuple[str, str], tmp_path: Path
) -> None:
    url, token = runtime
    config = {**CONFIG, "id": f"onboard-{secrets.token_hex(4)}"}
    args = {"config": config, "nodes_from": "file", "nodes_file": str(NODES),
            "dest": str(tmp_path), "onboard": True, "api_url": url, "api_token": token}
    created = run_module(args)
    assert created.get("registered") == "created", created
    stored = httpx.get(f"{url}/clusters/{config['id']}",
                       headers={"Authorization": f"Bearer {token}"}).json()
    assert stored == created["cluster"]
    again = run_module(args)
    assert again["changed"] is False and again["registered"] == "unchanged"
    retagged = run_module({**args, "config": {**config, "tags": ["gpu", "retagged"]}})
    assert retagged["registered"] == "updated"
    assert retagged["cluster"]["tags"] == ["gpu", "retagged"]
    refused = run_module({**args, "api_token": "wrong"})
    assert refused["failed"] is True and "401" in refused["msg"]
