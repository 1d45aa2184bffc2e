"""site.yml against a real cluster, twice (idempotence), when KUBECONFIG names one, and the
molecule scenario tests/molecule/kubernetes on the tests' real control plane, always.

Without molecule installed, the scenario's sequence (prepare, converge, idempotence,
verify) runs as the same playbooks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from control_plane import ControlPlane
from render_site import COLLECTIONS, REPO, link_collection
from test_apply_mode import seed

SCENARIO = REPO / "tests" / "molecule"  # molecule runs from tests/, where molecule/ is
needs_kubeconfig = pytest.mark.skipif(
    not os.environ.get("KUBECONFIG"),
    reason="set KUBECONFIG to a KinD or kubeadm cluster (nodes labelled registry=yes and "
    "metrics-db=yes) to install the management cluster on it",
)


def site(*args: str) -> subprocess.CompletedProcess:
    link_collection()
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "ANSIBLE_NOCOLOR": "1"}
    extra = json.dumps({"ansible_python_interpreter": sys.executable})
    return subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
         "-c", "local", str(REPO / "playbooks" / "site.yml"), "-e", extra, *args],
        capture_output=True, text=True, env=env, timeout=3600, check=False,
    )


@needs_kubeconfig
def test_install_then_nothing_changes() -> None:
    first = site()
    assert first.returncode == 0, first.stdout[-5000:]
    second = site()
    assert second.returncode == 0, second.stdout[-5000:]
    assert "changed=0" in second.stdout, "a second run must change nothing"


def test_molecule_scenario_on_the_control_plane(kube: ControlPlane) -> None:
    seed(kube, "nodes_good.yml")
    link_collection()
    env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    molecule = shutil.which("molecule", path=env["PATH"])
    if molecule:
        done = subprocess.run([molecule, "test", "-s", "kubernetes"], cwd=SCENARIO.parent, env=env,
                              capture_output=True, text=True, timeout=3600, check=False)
        assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-3000:]
        return
    extra = json.dumps({"ansible_python_interpreter": sys.executable})
    for step in ("prepare", "converge", "idempotence", "verify"):
        playbook = SCENARIO / "kubernetes" / f"{'converge' if step == 'idempotence' else step}.yml"
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c",
             "local", str(playbook), "-e", extra], capture_output=True, text=True, env=env,
            timeout=3600, check=False)
        assert done.returncode == 0, f"{step}: " + done.stdout[-5000:]
        if step == "idempotence":
            assert "changed=0" in done.stdout, "idempotence: " + done.stdout[-5000:]
