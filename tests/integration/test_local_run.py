"""`make run` end to end: the embedded local default, a second run that changes nothing, stop."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "run_local.py"
NODES = json.loads((REPO / "inventories" / "local" / "nodes.json").read_text())["items"]


def run_local(directory: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--dir", str(directory / "state"),
         "--manifests", str(directory / "manifests"), *extra],
        capture_output=True, text=True, timeout=600, check=False,
    )


def recap_changed(output: str) -> int:
    return int(re.search(r"^localhost\s+: ok=\d+\s+changed=(\d+)\s+unreachable=0\s+failed=0",
                         output, re.M).group(1))


def test_make_run_on_the_embedded_default(tmp_path: Path) -> None:
    try:
        first = run_local(tmp_path)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
        token_file = tmp_path / "state" / "api-token"
        token = token_file.read_text().strip()
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert first.stdout.count(token) == 1, "the token is shown once, when generated"
        assert recap_changed(first.stdout) > 0

        gpus = sum(len(json.loads(n["metadata"]["annotations"].get("gpu.aios/info", "[]")))
                   for n in NODES)
        onboarded = f"Cluster cluster-local-001: created, {len(NODES)} nodes, {gpus} GPUs"
        assert onboarded in first.stdout
        assert "Policies published: 6; pre-check map: update_cluster, add_node" in first.stdout
        assert "Governed update reputation: allowed (changed)" in first.stdout
        assert ("Governed update status: denied - protected fields cannot be updated: status"
                in first.stdout)
        assert f"Stability: stable ({len(NODES)}/{len(NODES)} nodes healthy)" in first.stdout
        rendered = list((tmp_path / "manifests").rglob("*.yaml"))
        assert len(rendered) > 50
        assert f"Manifests: {len(rendered)} rendered and validated" in first.stdout
        # the governed update ran with the sample cluster owner's token, not the admin's
        assert "Tenants: token 'owner-cluster-local-001' (role cluster-owner" in first.stdout
        assert "PATCH /clusters/update/cluster-local-001" in first.stdout.split("Tenants:")[1]
        assert "PATCH /clusters/update/cluster-west-vision-001 -> 403" in first.stdout
        assert "make shell" in first.stdout, "make run says where the collection's tools are"

        state = json.loads((tmp_path / "state" / "runtime.json").read_text())
        url, headers = state["url"], {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/clusters/cluster-local-001").status_code == 401
        cluster = httpx.get(f"{url}/clusters/cluster-local-001", headers=headers).json()
        assert cluster["reputation"] == 0.9 and cluster["status"] == "live"
        assert set(cluster["config"]["actionsPolicyMap"]) == {
            "update_cluster", "add_node", "remove_node", "scale_block"}
        decisions = httpx.get(f"{url}/decisions", headers=headers,
                              params={"cluster_id": "cluster-local-001",
                                      "action": "update_cluster"}).json()
        assert sorted(d["allowed"] for d in decisions) == [False, True]

        second = run_local(tmp_path)
        assert second.returncode == 0, second.stdout[-4000:]
        assert f"runtime already running at {url}" in second.stdout
        assert token not in second.stdout
        assert recap_changed(second.stdout) == 0, "a second run changes nothing"
        assert "Cluster cluster-local-001: unchanged" in second.stdout
        assert "allowed (already applied)" in second.stdout
    finally:
        stopped = run_local(tmp_path, "--stop")
    assert "stopped the runtime" in stopped.stdout
    assert "not running" in run_local(tmp_path, "--stop").stdout


def test_playbook_without_a_runtime_says_how_to_start_it(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from render_site import run_playbook

    (tmp_path / "api-token").write_text("x\n")
    done = run_playbook("local.yml", {"aios_api_url": "http://127.0.0.1:9",
                                      "local_state_dir": str(tmp_path)},
                        inventory=str(REPO / "inventories" / "local" / "hosts.yml"))
    assert done.returncode != 0
    assert "No healthy policy runtime at http://127.0.0.1:9" in done.stdout
    assert "`make run` starts it" in done.stdout
