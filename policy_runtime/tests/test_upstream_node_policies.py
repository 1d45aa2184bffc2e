"""add_node / remove_node policies written for upstream AIOS run here unchanged.

Upstream's gateway (services/management-services/cluster_controller_gateway/core/
cluster_db.py: ClusterPoliciesExecutor.handle_node_addition / handle_node_removal, and
membership_tools.py: ClusterMembership.execute_pre_check) hands its node pre-checks
``{"node_data", "cluster_data", "cluster_metrics"}`` (remove_node: ``{"node_id",
"cluster_data", "cluster_metrics"}``) and takes the returned ``input_data`` as the node it
then adds. The policies below are written that way, published through upstream's
``POST /policy``, mapped with ``/pre-check-policies/update`` and driven through both the
gateway's routes and ``/cluster-actions``.
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


def node(node_id: str, gpus: int = 1, swap: int = 0) -> dict:
    return {
        "id": node_id,
        "gpus": {"count": gpus, "memory": 23034 * gpus,
                 "gpus": [{"modelName": "NVIDIA L4", "memory": 23034}] * gpus,
                 "features": ["fp8"] if gpus else [],
                 "modelNames": ["NVIDIA L4"] if gpus else []},
        "vcpus": {"count": 16}, "memory": 65536, "swap": swap,
        "storage": {"disks": 1, "size": 512000},
        "network": {"interfaces": 1, "txBandwidth": 10000, "rxBandwidth": 10000},
    }


# Upstream style: reads node_data / cluster_data / cluster_metrics, returns the whole
# input dict as input_data, rewrites the node under node_data (swap switched off).
UPSTREAM_ADD_NODE = '''
node_data = input_data["node_data"]
cluster_data = input_data["cluster_data"]
metrics = input_data.get("cluster_metrics") or {}
limit = parameters.get("max_nodes", 3) if parameters else 3
if node_data["gpus"]["count"] < 1:
    return {"allowed": False, "input_data": input_data,
            "reason": "node " + node_data["id"] + " has no GPU"}
if len(cluster_data["nodes"]["nodeData"]) >= limit or metrics.get("overloaded"):
    return {"allowed": False, "input_data": input_data, "reason": "cluster is full"}
if node_data.get("swap"):
    input_data["node_data"] = dict(node_data, swap=0)
return {"allowed": True, "input_data": input_data}
'''

UPSTREAM_REMOVE_NODE = '''
node_id = input_data["node_id"]
cluster_data = input_data["cluster_data"]
ids = [n["id"] for n in cluster_data["nodes"]["nodeData"]]
if node_id == "node-1" or len(ids) <= 1:
    return {"allowed": False, "input_data": input_data,
            "reason": "node " + node_id + " is protected"}
return {"allowed": True, "input_data": input_data}
'''


def publish_upstream(api: httpx.Client, body: str) -> str:
    """Publish through upstream's POST /policy (its envelope: {"success", "data"})."""
    name = f"aiosv1.policies.test.upstream-node-{secrets.token_hex(4)}"
    response = api.post("/policy", json={"name": name, "version": "v1",
                                         "code": eval_body(body), "tags": "add_node"})
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    return response.json()["data"]["policy_rule_uri"]


def map_action(api: httpx.Client, cluster_id: str, action: str, body: str,
               parameters: dict | None = None) -> str:
    uri = publish_upstream(api, body)
    response = api.post("/pre-check-policies/update", params={"cluster_id": cluster_id},
                        json={action: {"policyRuleURI": uri, "parameters": parameters or {}}})
    assert response.status_code == 200, response.text
    return uri


@pytest.fixture()
def cid(api: httpx.Client) -> str:
    cluster_id = f"upn-{secrets.token_hex(4)}"
    assert api.post("/clusters", json={**copy.deepcopy(SEED), "id": cluster_id}).status_code == 201
    return cluster_id


def nodes_of(api: httpx.Client, cluster_id: str) -> list[dict]:
    return api.get(f"/clusters/{cluster_id}").json()["nodes"]["nodeData"]


def test_node_policies_get_upstreams_keys_beside_ours(api: httpx.Client, cid: str) -> None:
    """Both inputs carry upstream's keys: node_data is the node, cluster_data the cluster
    before the action, cluster_metrics null (no global metrics database here)."""
    probe = '''
same_node = input_data.get("node_data") == input_data.get("node")
same_cluster = input_data["cluster_data"] == input_data["cluster"]
return {"allowed": False, "reason": repr([sorted(input_data), same_node, same_cluster,
        input_data["cluster_metrics"], len(input_data["cluster_data"]["nodes"]["nodeData"])])}
'''
    map_action(api, cid, "add_node", probe)
    map_action(api, cid, "remove_node", probe)
    added = api.post("/cluster-actions/add-node", params={"cluster_id": cid},
                     json=node("node-9"))
    assert added.status_code == 403
    assert added.json()["reason"] == repr([
        ["cluster", "cluster_data", "cluster_id", "cluster_metrics", "node", "node_data"],
        True, True, None, 2])
    removed = api.delete("/cluster-actions/remove-node/node-2", params={"cluster_id": cid})
    assert removed.status_code == 403
    assert removed.json()["reason"] == repr([
        ["cluster", "cluster_data", "cluster_id", "cluster_metrics", "node_id"],
        True, True, None, 2])
    assert nodes_of(api, cid) == SEED["nodes"]["nodeData"]


def test_upstream_add_node_policy_through_the_gateway_routes(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/apis.py: pre_check_add_node (answers node_data, the
    node the policy returned) and join_node; the policy returns the whole input dict."""
    map_action(api, cid, "add_node", UPSTREAM_ADD_NODE)
    checked = api.post(f"/pre-checks/add-node/{cid}", json=node("node-9", swap=4096))
    assert checked.status_code == 200, checked.text
    assert checked.json()["allowed"] is True
    assert checked.json()["node_data"] == node("node-9"), "the rewrite of node_data"
    assert nodes_of(api, cid) == SEED["nodes"]["nodeData"], "a pre-check applies nothing"

    refused = api.post(f"/pre-checks/add-node/{cid}", json=node("node-0", gpus=0)).json()
    assert refused["allowed"] is False and refused["message"] == "node node-0 has no GPU"

    joined = api.post(f"/join-node/{cid}",
                      json={"node_data": {**node("node-9", swap=4096), "cluster_id": cid}})
    assert joined.status_code == 200, joined.text
    assert joined.json()["result"]["success"] is True
    stored = api.get(f"/clusters/{cid}").json()
    assert stored["nodes"]["nodeData"] == [*SEED["nodes"]["nodeData"], node("node-9")], (
        "exactly the rewritten node, not the input dict")
    assert stored["nodes"]["count"] == 3
    assert stored["gpus"]["count"] == SEED["gpus"]["count"] + 1

    full = api.post(f"/join-node/{cid}", json={"node_data": node("node-10")}).json()
    assert full["allowed"] is False and full["message"] == "cluster is full"
    assert api.get(f"/clusters/{cid}").json() == stored, "a denial changes nothing"


def test_upstream_add_node_policy_through_cluster_actions(api: httpx.Client, cid: str) -> None:
    map_action(api, cid, "add_node", UPSTREAM_ADD_NODE, {"max_nodes": 3})
    params = {"cluster_id": cid}
    before = api.get(f"/clusters/{cid}").json()
    denied = api.post("/cluster-actions/add-node", params=params, json=node("node-0", gpus=0))
    assert denied.status_code == 403 and denied.json()["reason"] == "node node-0 has no GPU"
    assert api.get(f"/clusters/{cid}").json() == before
    added = api.post("/cluster-actions/add-node", params=params, json=node("node-9", swap=8))
    assert added.status_code == 200, added.text
    assert added.json()["nodes"]["nodeData"][-1] == node("node-9")
    assert added.json()["nodes"]["count"] == 3
    assert added.json()["swap"] == before["swap"], "totals count the rewritten node"


@pytest.mark.parametrize("returned", [
    "node_data",  # upstream's gateway reading: input_data is the node itself
    "both",  # node and node_data rewritten the same way
])
def test_other_rewrite_shapes(api: httpx.Client, cid: str, returned: str) -> None:
    if returned == "node_data":
        body = 'return {"allowed": True, "input_data": dict(input_data["node_data"], swap=0)}'
    else:
        body = '''
rewritten = dict(input_data["node_data"], swap=0)
return {"allowed": True, "input_data": dict(input_data, node=rewritten, node_data=rewritten)}
'''
    map_action(api, cid, "add_node", body)
    checked = api.post(f"/pre-checks/add-node/{cid}", json=node("node-9", swap=64)).json()
    assert checked["allowed"] is True and checked["node_data"] == node("node-9")
    added = api.post("/cluster-actions/add-node", params={"cluster_id": cid},
                     json=node("node-9", swap=64))
    assert added.status_code == 200, added.text
    assert added.json()["nodes"]["nodeData"][-1] == node("node-9")


def test_two_different_rewrites_are_refused(api: httpx.Client, cid: str) -> None:
    """A node rewritten one way under node and another under node_data: fail closed."""
    map_action(api, cid, "add_node", '''
return {"allowed": True, "input_data": dict(input_data,
        node=dict(input_data["node"], swap=1), node_data=dict(input_data["node"], swap=2))}
''')
    before = api.get(f"/clusters/{cid}").json()
    refused = api.post("/cluster-actions/add-node", params={"cluster_id": cid},
                       json=node("node-9"))
    assert refused.status_code == 403
    assert "differently under node and node_data" in refused.json()["reason"]
    assert refused.json()["policy_allowed"] is False
    assert api.get(f"/clusters/{cid}").json() == before


def test_our_style_rewrite_still_applies(api: httpx.Client, cid: str) -> None:
    """This runtime's own rewrite (under node) is unchanged by the upstream keys."""
    map_action(api, cid, "add_node", '''
input_data["node"] = dict(input_data["node"], swap=0)
return {"allowed": True, "input_data": input_data}
''')
    added = api.post("/cluster-actions/add-node", params={"cluster_id": cid},
                     json=node("node-9", swap=64))
    assert added.status_code == 200, added.text
    assert added.json()["nodes"]["nodeData"][-1] == node("node-9")


def test_upstream_remove_node_policy(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/apis.py: pre_check_remove_node and remove_node, and
    /cluster-actions/remove-node, with a policy reading node_id and cluster_data."""
    map_action(api, cid, "remove_node", UPSTREAM_REMOVE_NODE)
    before = api.get(f"/clusters/{cid}").json()
    refused = api.post(f"/pre-checks/remove-node/{cid}", json={"node_id": "node-1"}).json()
    assert refused["allowed"] is False and refused["message"] == "node node-1 is protected"
    checked = api.post(f"/pre-checks/remove-node/{cid}", json={"node_id": "node-2"}).json()
    assert checked["allowed"] is True and checked["node_id"] == "node-2"
    denied = api.post(f"/remove-node/{cid}", json={"node_id": "node-1"}).json()
    assert denied["allowed"] is False
    denied = api.delete("/cluster-actions/remove-node/node-1", params={"cluster_id": cid})
    assert denied.status_code == 403
    assert api.get(f"/clusters/{cid}").json() == before, "denials change nothing"
    removed = api.post(f"/remove-node/{cid}", json={"node_id": "node-2"})
    assert removed.status_code == 200 and removed.json()["result"]["success"] is True
    assert [n["id"] for n in nodes_of(api, cid)] == ["node-1"]
    last = api.delete("/cluster-actions/remove-node/node-1", params={"cluster_id": cid})
    assert last.status_code == 403


def test_the_published_input_schemas_describe_upstreams_keys(api: httpx.Client) -> None:
    components = api.get("/openapi.json").json()["components"]["schemas"]
    add_node, remove_node = components["AddNodeInput"], components["RemoveNodeInput"]
    assert {"node_data", "cluster_data", "cluster_metrics"} <= set(add_node["properties"])
    assert add_node["properties"]["node_data"]["properties"] == (
        add_node["properties"]["node"]["properties"])
    assert {"cluster_data", "cluster_metrics"} <= set(remove_node["properties"])
    assert "node_data" not in remove_node["properties"]
    assert remove_node["properties"]["cluster_metrics"]["type"] == ["object", "null"]
