"""Upstream's parser routes ``POST /api/addNode`` and ``POST /api/createCluster``.

``/api/addNode`` is the governed add_node action; ``/api/createCluster`` is the registry's.

Contracts taken from upstream AIOS (OpenCyberspace/AIGr.id):

- ``k8s/onboarding/node/join-node.py`` posts ``{"header": {"templateUri": "Parser/V1",
  "parameters": {}}, "body": {"spec": {"values": <node>}}}`` to ``/api/addNode``, the
  node's fields (with its ``clusterId``) directly in ``values``; it calls
  ``raise_for_status()`` and runs ``kubeadm join`` only after a success status.
- ``services/management-services/parser/core/IR.py`` (``node_add_IR``) reads
  ``values.clusterId`` and ``values.nodeData``; ``cluster_create_IR`` reads the cluster
  document from ``values``.
- ``services/management-services/parser/core/api.py`` routes both to ``/api/<action>`` and
  answers
  ``{"success": true, "task_id": ..., "result": ...}``, failures with ``success: false``.
"""

from __future__ import annotations

import copy
import json
import secrets

import httpx
import pytest
from conftest import SEED_CLUSTER
from policy_sources import eval_body

SEED = json.loads(SEED_CLUSTER.read_text())
NODE = {
    "id": "node-joined",
    "gpus": {
        "count": 1,
        "memory": 15360,
        "gpus": [{"modelName": "Tesla T4", "memory": 15360}],
        "features": ["fp16", "tensor_cores"],
        "modelNames": ["Tesla T4"],
    },
    "vcpus": {"count": 8},
    "memory": 32000,
    "swap": 0,
    "storage": {"disks": 1, "size": 100000},
    "network": {"interfaces": 2, "txBandwidth": 0, "rxBandwidth": 0},
}
GPU_MINIMUM = eval_body("""
node = input_data["node"]
if node["gpus"]["count"] < 1:
    return {"allowed": False, "reason": "node has no GPU"}
return {"allowed": True, "input_data": input_data}
""")


def envelope(values: dict) -> dict:
    return {
        "header": {"templateUri": "Parser/V1", "parameters": {}},
        "body": {"spec": {"values": values}},
    }


@pytest.fixture()
def cluster(api: httpx.Client) -> str:
    cluster_id = f"parser-{secrets.token_hex(4)}"
    assert api.post("/clusters", json={**copy.deepcopy(SEED), "id": cluster_id}).status_code == 201
    name = f"aiosv1.policies.test.parser-{secrets.token_hex(4)}"
    published = api.post("/policies", json={"name": name, "version": "v1", "code": GPU_MINIMUM})
    assert published.status_code == 201, published.text
    uri = published.json()["policy_rule_uri"]
    mapped = api.post(
        "/pre-check-policies/update", params={"cluster_id": cluster_id}, json={"add_node": uri}
    )
    assert mapped.status_code == 200, mapped.text
    return cluster_id


def node_ids(api: httpx.Client, cluster_id: str) -> list[str]:
    return [n["id"] for n in api.get(f"/clusters/{cluster_id}").json()["nodes"]["nodeData"]]


def test_node_script_body_adds_the_node(api: httpx.Client, cluster: str) -> None:
    """join-node.py's body: the node's fields and its clusterId directly in values."""
    before = api.get(f"/clusters/{cluster}").json()
    answer = api.post("/api/addNode", json=envelope({**NODE, "clusterId": cluster}))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True and body["task_id"] == ""
    assert body["result"]["nodes"]["count"] == before["nodes"]["count"] + 1
    stored = api.get(f"/clusters/{cluster}").json()
    assert "node-joined" in node_ids(api, cluster)
    assert stored["gpus"]["count"] == before["gpus"]["count"] + 1
    again = api.post("/api/addNode", json=envelope({**NODE, "clusterId": cluster}))
    assert again.status_code == 409 and again.json()["success"] is False


def test_parser_ir_body_adds_the_node(api: httpx.Client, cluster: str) -> None:
    """node_add_IR's shape: values.clusterId and values.nodeData."""
    answer = api.post("/api/addNode", json=envelope({"clusterId": cluster, "nodeData": NODE}))
    assert answer.status_code == 200, answer.text
    assert "node-joined" in node_ids(api, cluster)


def test_a_denial_is_a_failure_status_with_the_reason(api: httpx.Client, cluster: str) -> None:
    """raise_for_status() must stop the script before kubeadm join."""
    cpu_only = {
        **NODE,
        "id": "cpu-only",
        "clusterId": cluster,
        "gpus": {"count": 0, "memory": 0, "gpus": [], "features": [], "modelNames": []},
    }
    answer = api.post("/api/addNode", json=envelope(cpu_only))
    assert answer.status_code == 403
    body = answer.json()
    assert body["success"] is False and body["message"] == "node has no GPU"
    assert body["action"] == "add_node" and body["decision_id"]
    assert "cpu-only" not in node_ids(api, cluster)


def test_warn_enforcement_lets_the_denied_node_in(api: httpx.Client, cluster: str) -> None:
    """The enforcement mode applies as on the governed route: warn logs the denial."""
    warn = api.post(
        "/pre-check-policies/enforcement", params={"cluster_id": cluster}, json={"add_node": "warn"}
    )
    assert warn.status_code == 200, warn.text
    cpu_only = {
        **NODE,
        "id": "cpu-warned",
        "gpus": {"count": 0, "memory": 0, "gpus": [], "features": [], "modelNames": []},
    }
    answer = api.post("/api/addNode", json=envelope({"clusterId": cluster, "nodeData": cpu_only}))
    assert answer.status_code == 200, answer.text
    assert "cpu-warned" in node_ids(api, cluster)
    (logged,) = api.get(
        "/decisions", params={"cluster_id": cluster, "action": "add_node", "limit": 1}
    ).json()
    assert logged["allowed"] is False and logged["enforcement"] == "warn"


def test_a_node_that_does_not_match_the_model_is_refused(api: httpx.Client, cluster: str) -> None:
    answer = api.post("/api/addNode", json=envelope({**NODE, "clusterId": cluster, "vcpus": 8}))
    assert answer.status_code == 422 and answer.json()["success"] is False
    assert "node-joined" not in node_ids(api, cluster)


NOT_ENVELOPES = [
    [],
    {"body": {}},
    {"body": {"spec": {"values": []}}},
    {"header": {"templateUri": "Other/V9"}, "body": {"spec": {"values": NODE}}},
]


@pytest.mark.parametrize("body", [*NOT_ENVELOPES, envelope({"clusterId": 7, "nodeData": NODE})])
def test_add_node_needs_the_envelope(api: httpx.Client, body: object) -> None:
    answer = api.post("/api/addNode", json=body)
    assert answer.status_code == 400 and answer.json()["success"] is False


def test_create_cluster_takes_the_parser_envelope(api: httpx.Client) -> None:
    """cluster_create_IR's shape: the cluster document in values (served by the registry)."""
    cluster_id = f"parser-new-{secrets.token_hex(4)}"
    body = envelope({**copy.deepcopy(SEED), "id": cluster_id})
    answer = api.post("/api/createCluster", json=body)
    assert answer.is_success, answer.text
    assert answer.json()["success"] is True
    assert api.get(f"/clusters/{cluster_id}").json()["id"] == cluster_id
    assert api.post("/api/createCluster", json=body).status_code == 409
    invalid = api.post("/api/createCluster", json=envelope({"id": f"{cluster_id}-x"}))
    assert invalid.status_code == 422
    assert api.get(f"/clusters/{cluster_id}-x").status_code == 404


def test_the_routes_need_a_token(server) -> None:
    anonymous = httpx.post(f"{server.url}/api/addNode", json=envelope(NODE), timeout=10)
    assert anonymous.status_code == 401
