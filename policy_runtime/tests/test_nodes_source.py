"""Live node data for the stability checker, from Kubernetes objects."""

from __future__ import annotations

import copy
import json
import secrets
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, SEED_CLUSTER, RuntimeServer
from kube_stub import KubeStub
from test_governance_api import publish_example
from test_stability import mgmt

from policy_runtime.embedded_db import EmbeddedDatabase
from policy_runtime.governance.nodes_source import node_entries, quantity

NODES = yaml.safe_load((REPO_ROOT / "tests/unit/fixtures/nodes_good.yml").read_text())["items"]


def metrics(name: str, cpu: str, memory: str) -> dict:
    return {"apiVersion": "metrics.k8s.io/v1beta1", "kind": "NodeMetrics",
            "metadata": {"name": name}, "timestamp": "2026-11-25T00:00:00Z", "window": "20s",
            "usage": {"cpu": cpu, "memory": memory}}


def nodes_with_trouble() -> list[dict]:
    nodes = copy.deepcopy(NODES)
    nodes[1]["metadata"].setdefault("annotations", {})["gpu.aios/info"] = json.dumps(
        [{"modelName": "NVIDIA A100", "health": "ok", "temperature_c": 91}]
    )
    nodes[2]["status"]["conditions"][0]["status"] = "False"
    return nodes


USAGE = [metrics("aios-worker-1", "3800m", "2Gi"), metrics("aios-worker-2", "500m", "1Gi"),
         metrics("aios-worker-3", "250000000n", "512Mi")]


@pytest.mark.parametrize(
    ("text", "value"),
    [("250m", 0.25), ("4", 4.0), ("3928640Ki", 3928640 * 1024), ("250000000n", 0.25),
     (None, 0.0)],
)
def test_quantities(text: str | None, value: float) -> None:
    assert quantity(text) == pytest.approx(value)


def test_entries_from_nodes_and_metrics() -> None:
    entries = {e["id"]: e for e in node_entries(nodes_with_trouble(), USAGE)}
    assert set(entries) == {n["metadata"]["name"] for n in NODES}
    assert entries["aios-worker-1"]["cpu_percent"] == 95.0  # 3.8 of 4 cores
    assert entries["aios-worker-1"]["gpus"][0]["temperature_c"] == 91
    assert entries["aios-worker-3"]["ready"] is True and entries["aios-worker-2"]["ready"] is False
    assert "cpu_percent" not in entries["aios-cp-1"], "no metrics, no usage figures"


def test_controller_reads_live_nodes(embedded_db: EmbeddedDatabase, tmp_path: Path) -> None:
    fake = KubeStub(nodes_with_trouble() + USAGE).start()
    cluster_id = f"live-{secrets.token_hex(4)}"
    server = RuntimeServer(
        embedded_db.uri, secrets.token_urlsafe(16), tmp_path / "log",
        AIOS_RUN_MODES="policies,clusters,controller", AIOS_DB_NAME="aios_live",
        AIOS_NODES_SOURCE="kubernetes",
        KUBECONFIG=str(fake.kubeconfig(tmp_path / "kubeconfig")),
    ).start()
    try:
        with server.client() as api:
            document = {**copy.deepcopy(json.loads(SEED_CLUSTER.read_text())), "id": cluster_id}
            assert api.post("/clusters", json=document).status_code == 201
            uri = publish_example(api, "cluster-stability")
            mgmt(api, cluster_id, "set_policy", {"policy_rule_uri": uri})
            result = mgmt(api, cluster_id, "run_now").json()
        data = result["stability_check_data"]
        assert result["is_stable"] is False
        assert data["nodes"] == 4 and data["healthy_nodes"] == 2
        assert data["unstable_nodes"] == {
            "aios-worker-1": ["cpu 95.0%", "gpu0 91C"], "aios-worker-2": ["not ready"]
        }
    finally:
        server.stop()
        fake.stop()
