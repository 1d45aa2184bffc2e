"""The add-ons' render output applied as a GitOps user applies it (kubectl apply --server-side
--validate=strict, Namespace first) to a real control plane with kwok nodes: the API server
neither refuses nor warns, every workload becomes ready, every claim binds, and a second
render into a directory holding the first one's Secrets applies without a change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from render_site import render_site
from test_render_apply import (
    KUBECTL,
    MANAGER,
    apply,
    comparable,
    key,
    kubectl,
    kwok_nodes,
    live,
    objects,
    settled,
)

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

PUBLIC = {"cluster_addons_public_address": "192.0.2.10", "aios_public_address": "198.51.100.1"}


def render(root: Path) -> Path:
    done = render_site(root, PUBLIC, playbook="addons.yml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "cluster_addons"


def test_the_addons_output_applies_and_becomes_ready(start_control_plane, tmp_path: Path) -> None:
    first = render(tmp_path / "one")
    kube = start_control_plane()
    try:
        for node in kwok_nodes():
            kube.add(node)
        apply(kube, [first])
        rendered = objects(first)
        kube.wait_for(
            "every add-on ready and every claim bound",
            lambda: settled(kube, rendered),
            timeout=180,
        )
        for manifest in rendered:
            assert live(kube, manifest) is not None, manifest["metadata"]["name"]
        deployments = [m for m in rendered if m["kind"] == "Deployment"]
        assert len(deployments) == 9
        for manifest in deployments:
            status = live(kube, manifest)["status"]
            assert status.get("readyReplicas") == 1, manifest["metadata"]["name"]
        # The bucket's setup job ran to completion once its Secret was there.
        (job,) = [m for m in rendered if m["kind"] == "Job"]
        assert job["metadata"]["name"] == "assets-storage-bucket"
        assert live(kube, job)["status"].get("succeeded") == 1

        second_root = tmp_path / "two"
        (second_root / "cluster_addons").mkdir(parents=True)
        for secret in first.glob("secret-*.yaml"):
            shutil.copy2(secret, second_root / "cluster_addons" / secret.name)
        second = render(second_root)
        assert {p.name: p.read_bytes() for p in second.iterdir()} == {
            p.name: p.read_bytes() for p in first.iterdir()
        }
        diff = kubectl(
            kube, "diff", "--server-side", f"--field-manager={MANAGER}", "-f", str(second)
        )
        assert diff.returncode == 0, diff.stdout
        before = {key(m): live(kube, m) for m in rendered}
        apply(kube, [second])
        after = {key(m): live(kube, m) for m in rendered}
        assert [k for k in before if comparable(before[k]) != comparable(after[k])] == []
    finally:
        kube.stop()
