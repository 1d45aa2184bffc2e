"""playbooks/onboard_cluster.yml: GPU facts on a GPU host, the document, the network.

The GPU host is this machine with an nvidia-smi script on PATH, reached over the local
connection; its node is aios-worker-3 of the realistic node list, whose own annotation is
broken, so the gathered facts visibly stand in for it.
"""

from __future__ import annotations

import json
import re
import secrets
import stat
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from control_plane import ControlPlane
from render_site import REPO, run_playbook

NODES = REPO / "tests" / "unit" / "fixtures" / "kubectl_get_nodes.json"
SEED = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json").read_text())
T4 = "Tesla T4, 15360, 535.129.03, 7.5, [N/A]"


@pytest.fixture()
def gpu_host(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """(inventory, environment) of an inventory whose GPU host has one Tesla T4."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\nif [ -n "$1" ]; then echo "{T4}"; exit 0; fi\n'
                   'echo "| NVIDIA-SMI 535.129.03   Driver Version: 535.129.03   '
                   'CUDA Version: 12.2 |"\n')
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local"}},
        "children": {"aios_gpu_hosts": {"hosts": {"gpu-host-3": {
            "ansible_connection": "local", "aios_node_name": "aios-worker-3"}}}},
    }}))
    return inventory, {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"}


def config(cluster_id: str) -> dict:
    return {**{k: SEED[k] for k in ("regionId", "config", "tags", "clusterMetadata")},
            "id": cluster_id}


def recap_changed(output: str, host: str = "localhost") -> int:
    return int(re.search(rf"^{host}\s+: ok=\d+\s+changed=(\d+)", output, re.M).group(1))


def onboard(inventory: Path, env: dict, **variables: object):
    return run_playbook("onboard_cluster.yml", variables, inventory=str(inventory), env=env)


def test_review_then_submit_from_a_node_file(runtime, gpu_host, tmp_path: Path) -> None:
    url, token = runtime
    inventory, env = gpu_host
    cluster_id = f"onboard-play-{secrets.token_hex(3)}"
    common = {"cluster_onboarding_config": config(cluster_id),
              "cluster_onboarding_nodes_from": "file",
              "cluster_onboarding_nodes_file": str(NODES),
              "cluster_onboarding_dest": str(tmp_path / "out"),
              "cluster_onboarding_api_url": url, "cluster_onboarding_api_token": token}
    headers = {"Authorization": f"Bearer {token}"}

    review = onboard(inventory, env, **common)
    assert review.returncode == 0, review.stdout + review.stderr
    populated = tmp_path / "out" / f"{cluster_id}_populated.json"
    document = json.loads(populated.read_text())
    worker_3 = next(n for n in document["nodes"]["nodeData"] if n["id"] == "aios-worker-3")
    assert worker_3["gpus"]["gpus"] == [{"modelName": "Tesla T4", "memory": 15360}]
    assert re.search(r"aios-worker-3\s+4\s+7841\s+0\s+49433\s+1x Tesla T4", review.stdout)
    assert "run again with -e aios_onboard=true" in review.stdout
    assert httpx.get(f"{url}/clusters/{cluster_id}", headers=headers).status_code == 404
    assert token not in review.stdout

    submit = onboard(inventory, env, aios_onboard=True, **common)
    assert submit.returncode == 0, submit.stdout + submit.stderr
    assert f"Cluster {cluster_id}: created" in submit.stdout
    stored = httpx.get(f"{url}/clusters/{cluster_id}", headers=headers).json()
    assert stored["gpus"]["count"] == 4 and stored["nodes"]["count"] == 5

    again = onboard(inventory, env, aios_onboard=True, **common)
    assert again.returncode == 0 and f"Cluster {cluster_id}: unchanged" in again.stdout
    assert recap_changed(again.stdout) == 0


def test_annotates_the_gpu_node_through_the_api(gpu_host, tmp_path: Path,
                                                kube: ControlPlane) -> None:
    inventory, env = gpu_host
    for node in json.loads(NODES.read_text())["items"]:
        kube.add(node)
    variables = {"cluster_onboarding_config": config("onboard-api"),
                 "cluster_onboarding_dest": str(tmp_path / "out"),
                 "aios_kubeconfig": str(kube.kubeconfig)}
    first = onboard(inventory, env, **variables)
    assert first.returncode == 0, first.stdout + first.stderr
    annotations = kube.get("Node", "aios-worker-3")["metadata"]["annotations"]
    assert json.loads(annotations["gpu.aios/info"]) == [{"modelName": "Tesla T4",
                                                         "memory": 15360}]
    document = json.loads((tmp_path / "out" / "onboard-api_populated.json").read_text())
    assert {n["id"] for n in document["nodes"]["nodeData"]} == set(kube.names("Node"))
    again = onboard(inventory, env, **variables)
    assert again.returncode == 0 and recap_changed(again.stdout) == 0


def test_missing_settings_are_named(gpu_host) -> None:
    inventory, env = gpu_host
    done = onboard(inventory, env, cluster_onboarding_nodes_from="file")
    assert done.returncode != 0
    assert "Set cluster_onboarding_config or cluster_onboarding_config_file" in done.stdout
