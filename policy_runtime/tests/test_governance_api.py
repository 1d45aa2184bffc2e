"""Run mode controller: pre-check maps, decisions (fail closed), governed updates, log."""

from __future__ import annotations

import copy
import json
import secrets

import httpx
import pytest
from conftest import EXAMPLES_DIR, SEED_CLUSTER
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from policy_sources import eval_body

SEED = json.loads(SEED_CLUSTER.read_text())


def publish_example(api: httpx.Client, name: str) -> str:
    directory = EXAMPLES_DIR / name
    document = json.loads((directory / "policy.json").read_text())
    document["code"] = (directory / "policy.py").read_text()
    response = api.post("/policies", json=document)
    assert response.status_code in (200, 201), response.text
    return response.json()["policy_rule_uri"]


def publish_code(api: httpx.Client, body: str, **fields: object) -> str:
    name = f"aiosv1.policies.test.gov-{secrets.token_hex(4)}"
    response = api.post("/policies", json={"name": name, "version": "v1",
                                           "code": eval_body(body), **fields})
    assert response.status_code == 201, response.text
    return response.json()["policy_rule_uri"]


@pytest.fixture()
def cluster(api: httpx.Client) -> dict:
    document = {**copy.deepcopy(SEED), "id": f"gov-{secrets.token_hex(4)}"}
    assert api.post("/clusters", json=document).status_code == 201
    return api.get(f"/clusters/{document['id']}").json()


def set_map(api: httpx.Client, cluster_id: str, changes: dict) -> httpx.Response:
    return api.post("/pre-check-policies/update", params={"cluster_id": cluster_id}, json=changes)


# -- the map ---------------------------------------------------------------------------
def test_map_update_semantics_of_the_seed(api: httpx.Client, cluster: dict) -> None:
    gpu = publish_example(api, "add-node-gpu-minimum")
    guard = publish_example(api, "update-cluster-field-guard")
    scale = publish_example(api, "scale-block-cap")
    first = set_map(api, cluster["id"], {"add_node": gpu, "update_cluster": guard})
    assert first.status_code == 200, first.text
    second = set_map(api, cluster["id"], {"add_node": "", "scale_block": scale,
                                          "create_cluster": gpu})
    mapping = second.json()["actionsPolicyMap"]
    assert "add_node" not in mapping
    assert mapping["update_cluster"] == guard and mapping["scale_block"] == scale
    assert mapping["add_cluster"] == gpu, "create_cluster is upstream's name for add_cluster"
    assert mapping["onScaleUp"] == "evaluate-gpu-availability", "other entries stay"
    for route in ("/pre-check-policies", "/pre-check-policies/get"):
        read = api.get(route, params={"cluster_id": cluster["id"]}).json()
        assert read == {"cluster_id": cluster["id"], "actionsPolicyMap": mapping,
                        "success": True, "map": mapping}


@pytest.mark.parametrize(
    ("changes", "status", "needle"),
    [
        ({"add_nodes": ""}, 400, "unknown action 'add_nodes'; valid actions: add_node"),
        ({"add_node": "aiosv1.policies.nope:v9-x"}, 400, "no policy is published"),
        ({"add_node": 5}, 422, "add_node: the entry is int 5; give a policy URI string"),
    ],
)
def test_map_refusals_change_nothing(
    api: httpx.Client, cluster: dict, changes: dict, status: int, needle: str
) -> None:
    response = set_map(api, cluster["id"], changes)
    assert response.status_code == status and needle in response.json()["detail"]
    assert api.get(f"/clusters/{cluster['id']}").json() == cluster


def test_cluster_id_is_required_without_a_default(api: httpx.Client) -> None:
    response = api.get("/pre-check-policies")
    assert response.status_code == 400 and "AIOS_CLUSTER_ID" in response.json()["detail"]
    assert api.get("/pre-check-policies", params={"cluster_id": "nope"}).status_code == 404


# -- decisions ---------------------------------------------------------------------------
def pre_check(api: httpx.Client, cluster_id: str, action: str, data: object) -> dict:
    response = api.post(f"/pre-check/{action}", params={"cluster_id": cluster_id}, json=data)
    assert response.status_code == 200, response.text
    return response.json()


def test_no_policy_mapped_is_allowed(api: httpx.Client, cluster: dict) -> None:
    decision = pre_check(api, cluster["id"], "remove_block", {"block_id": "b"})
    assert decision["allowed"] is True and decision["policy_rule_uri"] == ""


def test_decisions_follow_the_policy(api: httpx.Client, cluster: dict) -> None:
    uri = publish_example(api, "add-node-gpu-minimum")
    set_map(api, cluster["id"], {"add_node": uri})
    case = json.loads((EXAMPLES_DIR / "add-node-gpu-minimum/cases/denied_no_gpu.json").read_text())
    denied = pre_check(api, cluster["id"], "add_node", case["input_data"])
    assert denied["allowed"] is False and denied["reason"] == case["expected"]["reason"]
    good = json.loads(
        (EXAMPLES_DIR / "add-node-gpu-minimum/cases/allowed_two_a100.json").read_text()
    )
    assert pre_check(api, cluster["id"], "add_node", good["input_data"])["allowed"] is True


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("raise ValueError('boom')", "PolicyError: ValueError: boom"),
        ("while True:\n    pass", "Timeout"),
        ("return 'yes'", "not a decision"),
        ("return {'allowed': 'yes'}", "not a decision"),
        ("return getattr(1, '__class__')", "SandboxViolation"),
    ],
)
def test_failures_deny(api: httpx.Client, cluster: dict, body: str, needle: str) -> None:
    uri = publish_code(api, body, policy_settings={"timeout_seconds": 0.3})
    set_map(api, cluster["id"], {"scale_block": uri})
    decision = pre_check(api, cluster["id"], "scale_block", {"block_id": "b"})
    assert decision["allowed"] is False
    assert needle in decision["reason"] and "fail closed" in decision["reason"]


def test_a_deleted_policy_denies(api: httpx.Client, cluster: dict) -> None:
    uri = publish_code(api, "return {'allowed': True}")
    set_map(api, cluster["id"], {"add_block": uri})
    assert api.delete(f"/policies/{uri}", params={"force": "true"}).status_code == 204
    decision = pre_check(api, cluster["id"], "add_block", {})
    assert decision["allowed"] is False and "not published" in decision["reason"]


@pytest.mark.parametrize("mode", ["warn", "dryrun"])
def test_enforcement_modes_let_denials_through(
    api: httpx.Client, cluster: dict, mode: str
) -> None:
    uri = publish_code(api, "return {'allowed': False, 'reason': 'no'}")
    set_map(api, cluster["id"], {"remove_node": uri})
    api.post("/pre-check-policies/enforcement", params={"cluster_id": cluster["id"]},
             json={"remove_node": mode})
    decision = pre_check(api, cluster["id"], "remove_node", {"node_id": "n"})
    assert decision["allowed"] is True and decision["policy_allowed"] is False
    assert decision["enforcement"] == mode and decision["reason"] == "no"


def test_pre_check_of_an_unknown_action(api: httpx.Client, cluster: dict) -> None:
    response = api.post("/pre-check/launch_rocket", params={"cluster_id": cluster["id"]}, json={})
    assert response.status_code == 400 and "valid actions" in response.json()["detail"]


# -- governed updates ----------------------------------------------------------------------
def test_governed_update_allowed_and_denied(api: httpx.Client, cluster: dict) -> None:
    guard = publish_example(api, "update-cluster-field-guard")
    set_map(api, cluster["id"], {"update_cluster": guard})
    cluster = api.get(f"/clusters/{cluster['id']}").json()
    allowed = api.patch(f"/clusters/update/{cluster['id']}",
                        json={"clusterMetadata.name": "Renamed", "regionId": "eu-west-1",
                              "tags": ["gpu"]})
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["clusterMetadata"]["name"] == "Renamed"
    assert allowed.json()["regionId"] == "eu-west-1" and allowed.json()["tags"] == ["gpu"]
    before = api.get(f"/clusters/{cluster['id']}").json()
    denied = api.patch(f"/clusters/update/{cluster['id']}", json={"status": "offline"})
    assert denied.status_code == 403
    assert denied.json()["detail"] == "protected fields cannot be updated: status"
    assert api.get(f"/clusters/{cluster['id']}").json() == before


def test_policy_may_rewrite_the_update(api: httpx.Client, cluster: dict) -> None:
    uri = publish_code(
        api,
        "update = dict(input_data['update'])\n"
        "update['tags'] = sorted(set(update.get('tags', [])))\n"
        "return {'allowed': True, 'input_data': {**input_data, 'update': update}}",
    )
    set_map(api, cluster["id"], {"update_cluster": uri})
    response = api.put(f"/clusters/update/{cluster['id']}", json={"tags": ["b", "a", "b"]})
    assert response.status_code == 200 and response.json()["data"]["tags"] == ["a", "b"]


def test_allowed_but_invalid_update_changes_nothing(api: httpx.Client, cluster: dict) -> None:
    uri = publish_code(api, "return {'allowed': True, 'input_data': input_data}")
    set_map(api, cluster["id"], {"update_cluster": uri})
    before = api.get(f"/clusters/{cluster['id']}").json()
    response = api.patch(f"/clusters/update/{cluster['id']}", json={"status": 7})
    assert response.status_code == 422
    injected = api.patch(f"/clusters/update/{cluster['id']}", json={"$where": "1"})
    assert injected.status_code == 400
    assert api.get(f"/clusters/{cluster['id']}").json() == before
    assert api.patch("/clusters/update/missing-cluster", json={"tags": []}).status_code == 404


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=st.dictionaries(
    st.sampled_from(["tags", "regionId", "clusterMetadata.name", "reputation", "status"]),
    st.one_of(st.text(max_size=5), st.integers(0, 10), st.lists(st.text(max_size=3), max_size=2)),
    min_size=1, max_size=3))
def test_property_a_denied_update_never_changes_the_document(
    api: httpx.Client, cluster: dict, fields: dict
) -> None:
    uri = getattr(test_property_a_denied_update_never_changes_the_document, "deny_uri", None)
    if uri is None:
        uri = publish_code(api, "return {'allowed': False, 'reason': 'frozen'}")
        test_property_a_denied_update_never_changes_the_document.deny_uri = uri
    set_map(api, cluster["id"], {"update_cluster": uri})
    before = api.get(f"/clusters/{cluster['id']}").json()
    response = api.patch(f"/clusters/update/{cluster['id']}", json=fields)
    assert response.status_code == 403, response.text
    assert api.get(f"/clusters/{cluster['id']}").json() == before


# -- the decision log ----------------------------------------------------------------------
def test_decisions_are_logged(api: httpx.Client, cluster: dict) -> None:
    quiet = publish_code(api, "return {'allowed': False, 'reason': 'quiet'}")
    verbose = publish_code(api, "return {'allowed': True}", policy_settings={"log_input": True})
    set_map(api, cluster["id"], {"block_mgmt": quiet, "cluster_mgmt": verbose})
    pre_check(api, cluster["id"], "block_mgmt", {"secret": "s3cr3t"})
    pre_check(api, cluster["id"], "cluster_mgmt", {"visible": 1})
    latest = api.get("/decisions", params={"cluster_id": cluster["id"]}).json()
    assert [d["action"] for d in latest[:2]] == ["cluster_mgmt", "block_mgmt"]
    block = latest[1]
    assert block["allowed"] is False and block["policy_rule_uri"] == quiet
    assert block["reason"] == "quiet" and len(block["input_sha256"]) == 64
    assert "input_data" not in block, "inputs are kept only when the policy's settings say so"
    assert latest[0]["input_data"] == {"visible": 1}
    only = api.get("/decisions", params={"cluster_id": cluster["id"], "action": "block_mgmt"})
    assert [d["action"] for d in only.json()] == ["block_mgmt"]


# -- node actions and the upstream gateway routes -------------------------------------------
NEW_NODE = {
    "id": "node-3",
    "gpus": {"count": 4, "memory": 327680,
             "gpus": [{"modelName": "NVIDIA H100", "memory": 81920}] * 4,
             "features": ["fp8"], "modelNames": ["NVIDIA H100"]},
    "vcpus": {"count": 64}, "memory": 524288, "swap": 0,
    "storage": {"disks": 4, "size": 4194304},
    "network": {"interfaces": 2, "txBandwidth": 25000, "rxBandwidth": 25000},
}


def test_add_and_remove_node_recompute_the_totals(api: httpx.Client, cluster: dict) -> None:
    params = {"cluster_id": cluster["id"]}
    added = api.post("/cluster-actions/add-node", params=params, json=NEW_NODE)
    assert added.status_code == 200, added.text
    body = added.json()
    assert body["nodes"]["count"] == 3 and body["gpus"]["count"] == cluster["gpus"]["count"] + 4
    assert body["memory"] == cluster["memory"] + 524288
    again = api.post("/cluster-actions/add-node", params=params, json=NEW_NODE)
    assert again.status_code == 409
    broken = api.post("/cluster-actions/add-node", params=params,
                      json={**NEW_NODE, "id": "node-4", "vcpus": {}})
    assert broken.status_code == 422 and "vcpus.count" in broken.json()["detail"]
    removed = api.delete("/cluster-actions/remove-node/node-3", params=params)
    assert removed.status_code == 200
    assert {k: removed.json()[k] for k in ("nodes", "gpus", "memory")} == {
        k: cluster[k] for k in ("nodes", "gpus", "memory")}
    missing = api.delete("/cluster-actions/remove-node/node-9", params=params)
    assert missing.status_code == 404


def test_add_node_is_governed(api: httpx.Client, cluster: dict) -> None:
    set_map(api, cluster["id"], {"add_node": publish_example(api, "add-node-gpu-minimum")})
    params = {"cluster_id": cluster["id"]}
    no_gpu = {**NEW_NODE, "id": "cpu-1",
              "gpus": {"count": 0, "memory": 0, "gpus": [], "features": [], "modelNames": []}}
    denied = api.post("/cluster-actions/add-node", params=params, json=no_gpu)
    assert denied.status_code == 403 and "0 GPUs" in denied.json()["detail"]
    assert api.get(f"/clusters/{cluster['id']}").json()["nodes"] == cluster["nodes"]
    assert api.post("/cluster-actions/add-node", params=params, json=NEW_NODE).status_code == 200


def test_upstream_gateway_routes(api: httpx.Client) -> None:
    document = {**copy.deepcopy(SEED), "id": f"gw-{secrets.token_hex(4)}"}
    assert api.post("/clusters/create", json=document).status_code == 200
    assert api.get(f"/clusters/read/{document['id']}").json()["data"]["id"] == document["id"]
    assert api.delete(f"/clusters/delete/{document['id']}").json() == {
        "success": True, "data": {"message": "Cluster deleted"}, "deleted": document["id"]}
    assert api.get(f"/clusters/read/{document['id']}").status_code == 404, "404, not a 500"
    assert api.delete(f"/clusters/delete/{document['id']}").status_code == 404
