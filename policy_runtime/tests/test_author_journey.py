"""A policy author's journey, end to end: write -> check -> test -> publish -> govern ->
read the decision; and what a denial and its decision-log entry say."""

from __future__ import annotations

import json
import secrets
import textwrap
from pathlib import Path

import httpx
from onboarded import A100_80GB, L4_24GB, cluster, node
from test_cli import aios_policy, single_json
from test_governance_api import publish_example, set_map

GPU_PRECHECK = textwrap.dedent('''\
    """add_node: at least min_gpus GPUs with at least min_gpu_memory_mb MiB each."""


    class AIOSv1PolicyRule:
        def __init__(self, rule_id, settings, parameters):
            self.rule_id = rule_id

        def eval(self, parameters, input_data, context):
            gpus = input_data["node"]["gpus"]
            small = [g for g in gpus["gpus"] if g["memory"] < parameters["min_gpu_memory_mb"]]
            if gpus["count"] < parameters["min_gpus"] or small:
                reason = f"{gpus['count']} GPUs, {len(small)} below the memory minimum"
                return {"allowed": False, "input_data": input_data, "reason": reason}
            return {"allowed": True, "input_data": input_data}
''')


def write_policy(directory: Path, name: str) -> None:
    (directory / "cases").mkdir(parents=True)
    (directory / "policy.py").write_text(GPU_PRECHECK)
    metadata = {
        "name": name, "version": "v1", "release_tag": "stable", "type": "precheck",
        "tags": ["precheck", "add_node"],
        "policy_parameters": {"min_gpus": 1, "min_gpu_memory_mb": 20000},
        "policy_parameters_schema": {"type": "object", "properties": {
            "min_gpus": {"type": "integer"}, "min_gpu_memory_mb": {"type": "integer"}}},
    }
    (directory / "policy.json").write_text(json.dumps(metadata))
    shell = cluster("journey")
    for case, new, allowed in (("l4", node("l4", L4_24GB), True),
                               ("cpu", node("cpu"), False),
                               ("a100", node("a100", A100_80GB), True)):
        (directory / "cases" / f"{case}.json").write_text(json.dumps({
            "input_data": {"cluster_id": "journey", "node": new, "cluster": shell},
            "match": "partial", "expected": {"allowed": allowed}}))


def test_write_check_test_publish_govern_read(
    api: httpx.Client, tmp_path: Path, unique_name: str
) -> None:
    directory = tmp_path / "gpu-precheck"
    write_policy(directory, unique_name)
    checked = aios_policy("check", str(directory))
    assert single_json(checked.stdout)["ok"] is True, checked.stdout
    tested = aios_policy("test", str(directory))
    assert tested.returncode == 0 and tested.stdout.splitlines()[-1] == "3 passed, 0 failed"

    document = json.loads((directory / "policy.json").read_text())
    document["code"] = (directory / "policy.py").read_text()
    published = api.post("/policies", json=document)
    assert published.status_code == 201, published.text
    uri = published.json()["policy_rule_uri"]

    shell = cluster(f"journey-{unique_name[-6:]}", node("gpu-1", A100_80GB))
    assert api.post("/clusters", json=shell).status_code == 201
    cid = shell["id"]
    assert set_map(api, cid, {"add_node": uri}).status_code == 200
    params = {"cluster_id": cid}
    denied = api.post("/cluster-actions/add-node", params=params, json=node("cpu-9"))
    assert denied.status_code == 403
    body = denied.json()
    assert body["reason"] == "0 GPUs, 0 below the memory minimum"
    assert body["action"] == "add_node" and body["policy_rule_uri"] == uri
    assert "input_data" not in body and len(denied.content) < 600
    added = api.post("/cluster-actions/add-node", params=params, json=node("l4-1", L4_24GB))
    assert added.status_code == 200 and added.json()["nodes"]["count"] == 2

    log = api.get("/decisions", params={**params, "action": "add_node"}).json()
    entry = next(e for e in log if e["decision_id"] == body["decision_id"])
    assert entry["allowed"] is False and entry["summary"] == {"node_id": "cpu-9"}
    assert "input_data" not in entry, "full inputs only with the policy's log_input setting"
    assert log[0]["summary"] == {"node_id": "l4-1"} and log[0]["allowed"] is True


def test_a_denied_update_answers_briefly_and_logs_the_field_names(api: httpx.Client) -> None:
    guard = publish_example(api, "update-cluster-field-guard")
    shell = cluster(f"deny-{secrets.token_hex(4)}",
                    *(node(f"n{i}", A100_80GB, A100_80GB) for i in range(10)))
    assert api.post("/clusters", json=shell).status_code == 201
    assert set_map(api, shell["id"], {"update_cluster": guard}).status_code == 200
    assert len(json.dumps(shell)) > 5000
    denied = api.patch(f"/clusters/update/{shell['id']}",
                       json={"status": "offline", "clusterMetadata.name": "secret name"})
    assert denied.status_code == 403
    assert set(denied.json()) == {"detail", "allowed", "reason", "action", "policy_rule_uri",
                                  "decision_id", "enforcement", "policy_allowed",
                                  "code_sha256"}
    assert denied.json()["action"] == "update_cluster" and len(denied.content) < 600
    entry = api.get("/decisions", params={"cluster_id": shell["id"]}).json()[0]
    assert entry["decision_id"] == denied.json()["decision_id"]
    assert entry["summary"] == {"changed_fields": ["clusterMetadata.name", "status"]}
    assert "secret name" not in json.dumps(entry)
