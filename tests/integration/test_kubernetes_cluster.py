"""site.yml against a real cluster, twice (idempotence), when KUBECONFIG names one.

The same scenario as tests/molecule/kubernetes for machines without molecule.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from render_site import COLLECTIONS, REPO, link_collection

pytestmark = pytest.mark.skipif(
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


def test_install_then_nothing_changes() -> None:
    first = site()
    assert first.returncode == 0, first.stdout[-5000:]
    second = site()
    assert second.returncode == 0, second.stdout[-5000:]
    assert "changed=0" in second.stdout, "a second run must change nothing"
