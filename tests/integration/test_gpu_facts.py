"""gpu_facts with an nvidia-smi script, annotating a kwok node of a real control plane."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from control_plane import ControlPlane
from render_site import COLLECTIONS, REPO, link_collection

MODULE = REPO / "plugins" / "modules" / "gpu_facts.py"
NODES = yaml.safe_load((REPO / "tests/unit/fixtures/nodes_good.yml").read_text())["items"]
T4 = "Tesla T4, 15360, 535.129.03, 7.5, [N/A]"
SUMMARY = "| NVIDIA-SMI 535.129.03   Driver Version: 535.129.03   CUDA Version: 12.2 |"


def host(tmp_path: Path, nvidia_smi: str | None) -> dict[str, str]:
    """A PATH with only the tools this test gives the host."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if nvidia_smi is not None:
        script = bin_dir / "nvidia-smi"
        script.write_text(nvidia_smi)
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def smi_script(csv: str, rc: int = 0) -> str:
    return (f'#!/bin/sh\nif [ -n "$1" ]; then printf "%s\\n" "{csv}"; exit {rc}; fi\n'
            f'echo "{SUMMARY}"\n')


def run_module(args: dict, env: dict[str, str], check_mode: bool = False) -> dict:
    link_collection()
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}
    done = subprocess.run(
        [sys.executable, str(MODULE)], input=json.dumps(payload), capture_output=True, text=True,
        env={**os.environ, **env, "PYTHONPATH": str(COLLECTIONS)}, check=False,
    )
    return json.loads(done.stdout)


def test_no_nvidia_smi_means_no_gpus(tmp_path: Path) -> None:
    result = run_module({}, host(tmp_path, None))
    assert result["gpus"]["count"] == 0 and result["annotation"] == "[]"
    assert "no NVIDIA GPU found" in result["prerequisites"]["problems"][0]
    strict = run_module({"require_gpu_prereqs": True}, host(tmp_path, None))
    assert strict["failed"] is True and "no NVIDIA container runtime" in strict["msg"]


def test_broken_nvidia_smi_is_an_error(tmp_path: Path) -> None:
    broken = run_module({}, host(tmp_path, smi_script("NVIDIA-SMI has failed", rc=9)))
    assert broken["failed"] is True and "nvidia-smi failed (exit 9)" in broken["msg"]


@pytest.fixture()
def api(kube: ControlPlane):
    for node in NODES:
        kube.add(node)
    return kube, str(kube.kubeconfig)


def test_facts_and_idempotent_annotation(tmp_path: Path, api) -> None:
    kube, kubeconfig = api
    env = host(tmp_path, smi_script(T4))
    args = {"annotate_node": "aios-worker-1", "kubeconfig": kubeconfig}
    preview = run_module(args, env, check_mode=True)
    assert preview["changed"] is True
    assert "gpu.aios/info" not in kube.get("Node", "aios-worker-1")["metadata"]["annotations"]
    first = run_module(args, env)
    assert first["changed"] is True and first["cuda_version"] == "12.2"
    assert first["gpus"]["gpus"] == [{"modelName": "Tesla T4", "memory": 15360}]
    annotations = kube.get("Node", "aios-worker-1")["metadata"]["annotations"]
    assert annotations["gpu.aios/info"] == '[{"modelName":"Tesla T4","memory":15360}]'
    assert run_module(args, env)["changed"] is False
    missing = run_module({"annotate_node": "no-such-node", "kubeconfig": kubeconfig}, env)
    assert missing["failed"] is True and "cannot annotate node no-such-node" in missing["msg"]
