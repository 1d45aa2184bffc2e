"""Upstream AIOS's callers of the clusters registry and the gateway's governance routes.

One test per row of docs/compatibility/clusters.md: each sends exactly the request an
upstream caller sends (method, path, query, body) and asserts exactly what that caller
reads back (the status it checks, the keys it takes). The caller is named in each
docstring as ``<file in upstream's repository>: <class or function>``; upstream's code is
neither imported nor copied. Only the bearer header is ours: auth stays on every route.
"""

from __future__ import annotations

import copy
import json
import secrets

import httpx
import pytest
from conftest import SEED_CLUSTER, RuntimeServer
from policy_sources import eval_body

SEED = json.loads(SEED_CLUSTER.read_text())
GATEWAY = "services/management-services/cluster_controller_gateway/core"
NODE = {
    "id": "node-9",
    "gpus": {"count": 1, "memory": 23034,
             "gpus": [{"modelName": "NVIDIA L4", "memory": 23034}],
             "features": ["fp8"], "modelNames": ["NVIDIA L4"]},
    "vcpus": {"count": 16}, "memory": 65536, "swap": 0,
    "storage": {"disks": 1, "size": 512000},
    "network": {"interfaces": 1, "txBandwidth": 10000, "rxBandwidth": 10000},
}


def publish(api: httpx.Client, body: str) -> str:
    name = f"aiosv1.policies.test.upstream-{secrets.token_hex(4)}"
    response = api.post("/policies", json={"name": name, "version": "v1",
                                           "code": eval_body(body)})
    assert response.status_code == 201, response.text
    return response.json()["policy_rule_uri"]


ALLOW = 'return {"allowed": True, "input_data": input_data}'
DENY = 'return {"allowed": False, "input_data": input_data, "reason": "not today"}'


@pytest.fixture()
def cid(api: httpx.Client) -> str:
    cluster_id = f"up-{secrets.token_hex(4)}"
    assert api.post("/clusters", json={**copy.deepcopy(SEED), "id": cluster_id}).status_code == 201
    return cluster_id


def map_policy(api: httpx.Client, cluster_id: str, action: str, body: str) -> str:
    uri = publish(api, body)
    response = api.post("/pre-check-policies/update", params={"cluster_id": cluster_id},
                        json={action: {"policyRuleURI": uri, "parameters": {}}})
    assert response.status_code == 200, response.text
    return uri


# -- R: the clusters registry (upstream's clusters-db-service) --------------------------------
def test_r1_create(api: httpx.Client) -> None:
    """services/management-services/cluster_controller_gateway/core/cluster_db.py:
    ClusterClient.create_cluster posts the document to /clusters, calls raise_for_status and
    reads response.json(); services/applications/block/executor/core/block.py:
    ClustersDB.create_cluster requires status 201 and reads response.json()."""
    document = {**copy.deepcopy(SEED), "id": f"up-{secrets.token_hex(4)}"}
    response = api.post("/clusters", json=document)
    assert response.status_code == 201
    assert response.json()["id"] == document["id"]
    assert response.json()["nodes"] == SEED["nodes"]


def test_r2_read(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/cluster_db.py: ClusterClient.read_cluster (GET
    /clusters/<id>, raise_for_status, response.json(), then cluster["config"]["urlMap"]);
    cluster-controller/block_transactions/core/clusters.py: ClustersClient.read_cluster
    tells a missing cluster by status 404."""
    response = api.get(f"/clusters/{cid}")
    assert response.status_code == 200
    assert response.json()["config"]["urlMap"]["controllerService"] == (
        SEED["config"]["urlMap"]["controllerService"])
    assert api.get("/clusters/never-registered").status_code == 404


def test_r3_update_with_mongodb_operators(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/cluster_db.py: ClusterClient.update_cluster (PUT
    /clusters/<id> with {"$set": ...}, raise_for_status, response.json());
    block_transactions/core/clusters.py: CurrentClusterClient.add_node sends
    {"$push": {"nodes.nodeData": node}, "$inc": {"nodes.count": 1}};
    block/executor/core/block.py: ClustersDB.update_cluster_by_id requires 200, 404 when
    missing."""
    response = api.put(f"/clusters/{cid}",
                       json={"$set": {"clusterMetadata.description": "moved racks"}})
    assert response.status_code == 200
    assert response.json()["clusterMetadata"]["description"] == "moved racks"
    pushed = api.put(f"/clusters/{cid}", json={"$push": {"nodes.nodeData": NODE},
                                              "$inc": {"nodes.count": 1}})
    assert pushed.status_code == 200
    assert pushed.json()["nodes"]["count"] == SEED["nodes"]["count"] + 1
    assert pushed.json()["nodes"]["nodeData"][-1] == NODE
    assert api.put("/clusters/never-registered",
                   json={"$set": {"reputation": 1}}).status_code == 404


def test_r3b_infrastructure_url_map_is_written_and_cleared(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/infra.py: K8sInfraCreateTaskHandler sets
    {"$set": {"config.urlMap": <map>}} after creating a cluster's infrastructure (the map of
    infra_automation/controller.py prepare_url_map, with membershipServer) and
    {"$set": {"config.urlMap": {}}} after removing it; both through
    ClusterClient.update_cluster (raise_for_status)."""
    host = "http://203.0.113.9"
    url_map = {"controllerService": f"{host}:32300", "metricsService": f"{host}:32301",
               "blocksQuery": f"{host}:32302", "publicGateway": f"{host}:32000",
               "parameterUpdater": f"{host}:32303", "membershipServer": f"{host}:30501"}
    written = api.put(f"/clusters/{cid}", json={"$set": {"config.urlMap": url_map}})
    assert written.status_code == 200, written.text
    assert api.get(f"/clusters/{cid}").json()["config"]["urlMap"] == url_map
    cleared = api.put(f"/clusters/{cid}", json={"$set": {"config.urlMap": {}}})
    assert cleared.status_code == 200, cleared.text
    assert api.get(f"/clusters/{cid}").json()["config"]["urlMap"] == {}
    # A map that is neither complete nor empty is still refused, naming the field.
    partial = api.put(f"/clusters/{cid}",
                      json={"$set": {"config.urlMap": {"controllerService": f"{host}:1"}}})
    assert partial.status_code == 422 and "metricsService" in partial.text


def test_r3c_cluster_controller_rewrites_nodes_and_totals(api: httpx.Client, cid: str) -> None:
    """services/cluster-services/cluster-controller/infra/core/cluster_actions.py:
    ClusterActions.add_node_to_cluster (and remove_node_from_cluster) sends
    {"$set": {"nodes.count", "nodes.nodeData", "gpus.count", "gpus.memory",
    "gpus.modelNames", "vcpus.count", "memory", "swap", "storage.disks", "storage.size",
    "network.interfaces", "network.txBandwidth", "network.rxBandwidth"}} through
    infra/core/cluster_db.py ClusterClient.update_cluster (raise_for_status, json)."""
    # A cluster never given modelNames is stored without the key, not with a null.
    assert "modelNames" not in api.get(f"/clusters/{cid}").json()["gpus"]
    nodes = [*SEED["nodes"]["nodeData"], NODE]
    update = {"$set": {
        "nodes.count": len(nodes), "nodes.nodeData": nodes,
        "gpus.count": sum(n["gpus"]["count"] for n in nodes),
        "gpus.memory": sum(n["gpus"]["memory"] for n in nodes),
        "gpus.modelNames": sorted({m for n in nodes for m in n["gpus"]["modelNames"]}),
        "vcpus.count": sum(n["vcpus"]["count"] for n in nodes),
        "memory": sum(n["memory"] for n in nodes), "swap": sum(n["swap"] for n in nodes),
        "storage.disks": sum(n["storage"]["disks"] for n in nodes),
        "storage.size": sum(n["storage"]["size"] for n in nodes),
        "network.interfaces": sum(n["network"]["interfaces"] for n in nodes),
        "network.txBandwidth": sum(n["network"]["txBandwidth"] for n in nodes),
        "network.rxBandwidth": sum(n["network"]["rxBandwidth"] for n in nodes),
    }}
    response = api.put(f"/clusters/{cid}", json=update)
    assert response.status_code == 200, response.text
    assert response.json()["gpus"]["modelNames"] == update["$set"]["gpus.modelNames"]
    assert response.json()["nodes"]["count"] == 3


def test_r4_delete(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/cluster_db.py: ClusterClient.delete_cluster
    (raise_for_status, then response.json(): a body is required);
    block/executor/core/block.py: ClustersDB.delete_cluster_by_id requires 200 and reads
    response.json(), 404 when missing."""
    response = api.delete(f"/clusters/{cid}")
    assert response.status_code == 200
    assert response.json() == {"message": "Cluster deleted"}
    assert api.delete(f"/clusters/{cid}").status_code == 404


def test_r5_query(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/cluster_db.py: ClusterClient.execute_query posts
    {"query": <filter>} to /clusters/query and reads a list of documents;
    block_transactions/core/clusters.py: CurrentClusterClient.query wraps the filter in
    {"$and": [<filter>, {"id": <cluster id>}]}."""
    response = api.post("/clusters/query", json={"query": {"$and": [
        {"gpus.count": {"$gte": 1}}, {"id": cid}]}})
    assert response.status_code == 200
    assert [c["id"] for c in response.json()] == [cid]
    assert api.post("/clusters/query", json={"query": {"id": "never"}}).json() == []


# -- G: the cluster controller gateway's routes -----------------------------------------------
def test_g1_gateway_create(api: httpx.Client) -> None:
    """services/management-services/parser/core/modules/cluster_actions.py:
    ClusterInfraManagement.create_cluster posts the document to /clusters/create and requires
    status 200 and data["success"], then returns data["data"]."""
    document = {**copy.deepcopy(SEED), "id": f"up-{secrets.token_hex(4)}"}
    response = api.post("/clusters/create", json=document)
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["data"]["id"] == document["id"]


def test_g2_gateway_read(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/apis.py: read_cluster answers
    {"success": true, "data": <cluster>} (its tests/get.sh calls it)."""
    response = api.get(f"/clusters/read/{cid}")
    assert response.status_code == 200
    assert response.json()["success"] is True and response.json()["data"]["id"] == cid


def test_g3_gateway_governed_update(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/apis.py: update_cluster takes the fields to set
    (tests/update.json: dotted paths and values, PUT /clusters/update/<id>) and answers
    {"success": true, "data": <cluster>}; our update_cluster pre-check governs it."""
    response = api.put(f"/clusters/update/{cid}",
                       json={"clusterMetadata.name": "Renamed", "tags": ["gpu"]})
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["data"]["clusterMetadata"]["name"] == "Renamed"
    map_policy(api, cid, "update_cluster", DENY)
    denied = api.put(f"/clusters/update/{cid}", json={"tags": ["x"]})
    assert denied.status_code == 403 and denied.json()["reason"] == "not today"


def test_g4_gateway_delete(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/apis.py: delete_cluster answers
    {"success": true, "data": <the registry's answer>}."""
    response = api.delete(f"/clusters/delete/{cid}")
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["data"] == {"message": "Cluster deleted"}


def test_g5_pre_check_map_update(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/apis.py: update_pre_check_policies takes
    ?cluster_id= and the map entries to set as the body (an entry as
    membership_tools.py BaseClusterPolicy reads it: {"policyRuleURI", "parameters"}) and
    answers 200 {"success": true, "map": <the whole map>}."""
    uri = publish(api, ALLOW)
    response = api.post("/pre-check-policies/update", params={"cluster_id": cid},
                        json={"add_node": {"policyRuleURI": uri, "parameters": {"min": 1}}})
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    assert body["map"]["add_node"] == {"policyRuleURI": uri, "parameters": {"min": 1}}
    assert body["map"]["onScaleUp"] == SEED["config"]["actionsPolicyMap"]["onScaleUp"]


def test_g6_pre_check_map_get(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/apis.py: get_pre_check_policies
    (GET ?cluster_id=) answers {"success": true, "map": <the map>}."""
    response = api.get("/pre-check-policies/get", params={"cluster_id": cid})
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["map"] == SEED["config"]["actionsPolicyMap"]


def test_g7_pre_check_add_node(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/apis.py: pre_check_add_node takes the node data as
    the body (upstream's membership client, membership-client/core/client.go
    PreCheckAddNode, wraps it as {"node_data": ...}); it answers 200 with success, allowed
    and node_data, or {"success": true, "allowed": false, "message"} when the policy
    refuses. Nothing is applied."""
    before = api.get(f"/clusters/{cid}").json()
    for body in (NODE, {"node_data": {**NODE, "cluster_id": cid}}):
        response = api.post(f"/pre-checks/add-node/{cid}", json=body)
        assert response.status_code == 200, response.text
        assert response.json()["success"] is True and response.json()["allowed"] is True
        assert response.json()["node_data"] == NODE
    map_policy(api, cid, "add_node", DENY)
    denied = api.post(f"/pre-checks/add-node/{cid}", json=NODE)
    assert denied.status_code == 200
    assert denied.json()["success"] is True and denied.json()["allowed"] is False
    assert denied.json()["message"] == "not today"
    assert api.get(f"/clusters/{cid}").json()["nodes"] == before["nodes"]


def test_g8_dry_run_add_node(api: httpx.Client, cid: str) -> None:
    """membership-client/core/client.go: DryRunAddNodePrecheck posts the node data to
    /pre-check-policies/add_node/dry_run/<cluster id>, requires status 200, and reads
    success, allowed and data (cluster_controller_gateway/core/apis.py dry_run_add_node)."""
    response = api.post(f"/pre-check-policies/add_node/dry_run/{cid}", json=NODE)
    assert response.status_code == 200
    assert response.json()["success"] is True and response.json()["allowed"] is True
    assert response.json()["data"]["dry_check"] is True
    map_policy(api, cid, "add_node", DENY)
    denied = api.post(f"/pre-check-policies/add_node/dry_run/{cid}", json=NODE).json()
    assert denied["success"] is True and denied["allowed"] is False
    assert denied["data"]["reason"] == "not today"
    assert len(api.get(f"/clusters/{cid}").json()["nodes"]["nodeData"]) == SEED["nodes"]["count"]


def test_g9_pre_check_remove_node(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/apis.py: pre_check_remove_node takes
    {"node_id"} and answers 200 with success, allowed and node_id (the fields
    membership-client/core/client.go PreCheckRemoveNodeResponse reads); a refusal is
    {"success": true, "allowed": false, "message"}."""
    response = api.post(f"/pre-checks/remove-node/{cid}", json={"node_id": "node-1"})
    assert response.status_code == 200
    assert response.json()["success"] is True and response.json()["allowed"] is True
    assert response.json()["node_id"] == "node-1"
    map_policy(api, cid, "remove_node", DENY)
    denied = api.post(f"/pre-checks/remove-node/{cid}", json={"node_id": "node-1"}).json()
    assert denied["success"] is True and denied["allowed"] is False
    assert api.post(f"/pre-checks/remove-node/{cid}", json={}).status_code == 422


def test_g10_dry_run_remove_node(api: httpx.Client, cid: str) -> None:
    """membership-client/core/client.go: DryRunRemoveNodePrecheck posts {"node_id"} to
    /pre-check-policies/remove_node/dry_run/<cluster id>/<node id> and requires 200
    (cluster_controller_gateway/core/apis.py dry_run_remove_node answers success, allowed,
    data)."""
    response = api.post(f"/pre-check-policies/remove_node/dry_run/{cid}/node-1",
                        json={"node_id": "node-1"})
    assert response.status_code == 200
    assert response.json()["success"] is True and response.json()["allowed"] is True


def test_g11_join_node(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/apis.py: join_node takes {"node_data", "mode",
    "custom_ip"}, adds cluster_id to the node data, and answers 200 with the membership
    server's {"success", "result": {"success", "join_command", "message"}} (the fields of
    membership-client/core/client.go JoinNodeResponse), or {"success": true,
    "allowed": false, "message"} when the add_node policy refuses."""
    response = api.post(f"/join-node/{cid}", json={
        "node_data": {**NODE, "cluster_id": cid}, "mode": "local_network", "custom_ip": ""})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True and body["result"]["success"] is True
    assert body["result"]["join_command"] == ""
    assert "node-9" in body["result"]["message"]
    stored = api.get(f"/clusters/{cid}").json()
    assert stored["nodes"]["nodeData"][-1] == NODE
    assert stored["gpus"]["count"] == SEED["gpus"]["count"] + 1, "totals are recomputed"
    map_policy(api, cid, "add_node", DENY)
    denied = api.post(f"/join-node/{cid}", json={"node_data": {**NODE, "id": "node-10"}})
    assert denied.status_code == 200
    assert denied.json()["allowed"] is False and denied.json()["message"] == "not today"
    assert api.post(f"/join-node/{cid}", json={"mode": "local_network"}).status_code == 422


def test_g12_remove_node(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/apis.py: remove_node takes {"node_id"} and answers
    200 with {"success", "result"} (membership-client/core/client.go RemoveNodeResponse),
    or {"success": true, "allowed": false, "message"} when the remove_node policy refuses."""
    response = api.post(f"/remove-node/{cid}", json={"node_id": "node-2"})
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    ids = [n["id"] for n in api.get(f"/clusters/{cid}").json()["nodes"]["nodeData"]]
    assert "node-2" not in ids
    map_policy(api, cid, "remove_node", DENY)
    denied = api.post(f"/remove-node/{cid}", json={"node_id": "node-1"}).json()
    assert denied["allowed"] is False
    assert api.post(f"/remove-node/{cid}", json={"node_id": "node-77"}).status_code == 404


def test_g13_add_node_to_cluster(api: httpx.Client, cid: str) -> None:
    """services/management-services/parser/core/modules/cluster_actions.py:
    ClusterInfraManagement.add_node_to_cluster posts the node data to
    /nodes/add-node-to-cluster/<cluster id>, requires 200 and data["success"], returns
    data["data"]."""
    response = api.post(f"/nodes/add-node-to-cluster/{cid}", json=NODE)
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["data"]["nodes"]["nodeData"][-1] == NODE


MANAGED = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.parameters = parameters

    def eval(self, parameters, input_data, context):
        return {"allowed": True, "input_data": input_data}

    def management(self, action, data):
        if action == "get_limits":
            return {"status": "success", "limits": self.parameters}
        return {"status": "error", "message": "unknown action " + action}
"""


@pytest.mark.parametrize(("route", "action"), [("add-node", "add_node"),
                                               ("remove-node", "remove_node")])
def test_g14_node_policy_management(api: httpx.Client, cid: str, route: str,
                                    action: str) -> None:
    """cluster_controller_gateway/core/apis.py: mgmt_add_node and mgmt_remove_node take
    {"mgmt_action", "mgmt_data"} at /pre-checks/<add|remove>-node/mgmt/<cluster id>, run
    the policy's management command (membership_tools.py BaseClusterPolicy
    .execute_mgmt_command) and answer {"success": true, "result"}."""
    path = f"/pre-checks/{route}/mgmt/{cid}"
    unmapped = api.post(path, json={"mgmt_action": "get_limits", "mgmt_data": {}})
    assert unmapped.status_code == 400 and action in unmapped.json()["detail"]
    name = f"aiosv1.policies.test.upstream-mgmt-{secrets.token_hex(4)}"
    published = api.post("/policies", json={"name": name, "version": "v1", "code": MANAGED})
    assert published.status_code == 201, published.text
    uri = published.json()["policy_rule_uri"]
    assert api.post("/pre-check-policies/update", params={"cluster_id": cid}, json={
        action: {"policyRuleURI": uri, "parameters": {"min_gpus": 1}}}).status_code == 200
    response = api.post(path, json={"mgmt_action": "get_limits", "mgmt_data": {}})
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True,
                               "result": {"status": "success", "limits": {"min_gpus": 1}}}
    assert api.post(path, json={"mgmt_data": {}}).status_code == 422, "mgmt_action is needed"
    assert api.post(path, json={"mgmt_action": ["x"]}).status_code == 422


# -- P: the parser's onboarding route served by the registry ---------------------------------
def test_p1_onboarding_script_create_cluster(api: httpx.Client) -> None:
    """k8s/onboarding/cluster/onboard.py (with --onboard) posts the populated document as it
    is (no envelope) to /api/createCluster and counts only status 200 as onboarded
    (services/management-services/parser/core/api.py answers 200 {"success": true, ...})."""
    document = {**copy.deepcopy(SEED), "id": f"up-{secrets.token_hex(4)}"}
    response = api.post("/api/createCluster", json=document)
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert api.get(f"/clusters/{document['id']}").status_code == 200


# -- S: the stability checker and /mgmt ---------------------------------------------------------
STABILITY = """
cluster = input_data["cluster"]
return {"is_stable": cluster["id"] == input_data["cluster_data"]["id"],
        "stability_check_data": {"keys": sorted(input_data),
                                 "nodes": len(input_data["nodes_data"])}}
"""


def test_s1_stability_policy_gets_upstreams_input(api: httpx.Client, cid: str) -> None:
    """services/cluster-services/cluster-controller/stability_checker/core/monitor.py:
    ClusterStabilityCheckerPolicyExecutor.evaluate hands the policy {"cluster",
    "nodes_data"}; our policies read "cluster_data". Both are given."""
    uri = publish(api, STABILITY)
    params = {"cluster_id": cid}
    assert api.post("/mgmt", params=params, json={
        "service": "stability_checker", "mgmt_action": "set_policy",
        "mgmt_data": {"policy_rule_uri": uri}}).status_code == 200
    assert api.put("/nodes-data", params=params, json=[{"id": "node-1"}]).status_code == 200
    result = api.post("/mgmt", params=params, json={
        "service": "stability_checker", "mgmt_action": "run_now", "mgmt_data": {}}).json()
    assert result["is_stable"] is True
    assert result["stability_check_data"] == {
        "keys": ["cluster", "cluster_data", "nodes_data"], "nodes": 1}


def test_s2_check_stability(api: httpx.Client, cid: str) -> None:
    """stability_checker/core/api.py: check_stability answers 200 {"success": true,
    "message"}; ours answers the latest check with the same two keys added."""
    uri = publish(api, STABILITY)
    params = {"cluster_id": cid}
    api.post("/mgmt", params=params, json={"service": "stability_checker",
                                           "mgmt_action": "set_policy",
                                           "mgmt_data": {"policy_rule_uri": uri}})
    api.post("/mgmt", params=params, json={"service": "stability_checker",
                                           "mgmt_action": "run_now", "mgmt_data": {}})
    response = api.get("/check_stability", params=params)
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["message"] == "Cluster stability check passed"


def test_s3_mgmt_from_the_gateway(api: httpx.Client, cid: str) -> None:
    """cluster_controller_gateway/core/mgmt.py: ServiceMgmtClient.execute_mgmt_command posts
    {"block_id": "", "service": "stability_checker", "mgmt_action", "mgmt_data",
    "instance_id": null} to <urlMap.parameterUpdater>/mgmt, calls raise_for_status and
    passes response.json() on (stability_checker/core/api.py mgmt answers
    {"success": true, "data"})."""
    uri = publish(api, STABILITY)
    response = api.post("/mgmt", params={"cluster_id": cid}, json={
        "block_id": "", "service": "stability_checker", "mgmt_action": "set_policy",
        "mgmt_data": {"policy_rule_uri": uri}, "instance_id": None})
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    assert response.json()["data"]["stabilityChecker"]["policyRuleURI"] == uri


def test_s4_mgmt_as_the_stability_checker_takes_it(api: httpx.Client, cid: str) -> None:
    """stability_checker/core/api.py: mgmt reads data["mgmt_action"] and data["mgmt_data"]
    only (no service) and answers {"success": true, "data"}."""
    uri = publish(api, STABILITY)
    response = api.post("/mgmt", params={"cluster_id": cid}, json={
        "mgmt_action": "set_policy", "mgmt_data": {"policy_rule_uri": uri}})
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    paused = api.post("/mgmt", params={"cluster_id": cid},
                      json={"mgmt_action": "pause", "mgmt_data": {}}).json()
    assert paused["success"] is True and paused["data"]["stabilityChecker"]["paused"] is True
    unknown = api.post("/mgmt", params={"cluster_id": cid},
                       json={"service": "block_health", "mgmt_action": "pause"})
    assert unknown.status_code == 400


# -- every row keeps auth --------------------------------------------------------------------
UPSTREAM_ROUTES = [
    ("POST", "/clusters"), ("GET", "/clusters/{cid}"), ("PUT", "/clusters/{cid}"),
    ("DELETE", "/clusters/{cid}"), ("POST", "/clusters/query"), ("POST", "/clusters/create"),
    ("GET", "/clusters/read/{cid}"), ("PUT", "/clusters/update/{cid}"),
    ("DELETE", "/clusters/delete/{cid}"), ("POST", "/pre-check-policies/update"),
    ("GET", "/pre-check-policies/get"), ("POST", "/pre-checks/add-node/{cid}"),
    ("POST", "/pre-check-policies/add_node/dry_run/{cid}"),
    ("POST", "/pre-checks/remove-node/{cid}"),
    ("POST", "/pre-check-policies/remove_node/dry_run/{cid}/node-1"),
    ("POST", "/join-node/{cid}"), ("POST", "/remove-node/{cid}"),
    ("POST", "/nodes/add-node-to-cluster/{cid}"), ("POST", "/pre-checks/add-node/mgmt/{cid}"),
    ("POST", "/pre-checks/remove-node/mgmt/{cid}"), ("GET", "/check_stability"),
    ("POST", "/mgmt"),
]


@pytest.mark.parametrize(("method", "path"), UPSTREAM_ROUTES)
def test_every_upstream_route_still_requires_the_bearer(
    server: RuntimeServer, api: httpx.Client, cid: str, method: str, path: str
) -> None:
    """Upstream's callers send no Authorization header; ours must add the bearer, and
    nothing changes without it (the cluster is read back unchanged)."""
    before = api.get(f"/clusters/{cid}").json()
    url = server.url + path.replace("{cid}", cid)
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.request(method, url, headers=headers, params={"cluster_id": cid},
                                 json={"node_id": "node-1", "mgmt_action": "pause"})
        assert response.status_code == 401, (method, path, response.status_code)
    assert api.get(f"/clusters/{cid}").json() == before


# -- adversarial inputs on the new routes -----------------------------------------------------
@pytest.mark.parametrize("body", [
    [NODE], "node-9", None, 7, {"node_data": "node-9"}, {"node_data": None},
    {**NODE, "gpus": {"count": -1, "memory": 0}}, {**NODE, "extra": "field"},
    {**NODE, "id": {"$ne": ""}},
])
def test_malformed_node_data_is_refused_and_changes_nothing(
    api: httpx.Client, cid: str, body: object
) -> None:
    before = api.get(f"/clusters/{cid}").json()
    for path, wrapped in ((f"/join-node/{cid}", {"node_data": body}),
                          (f"/nodes/add-node-to-cluster/{cid}", body)):
        response = api.post(path, json=wrapped)
        assert response.status_code in (400, 422), (path, body, response.text)
        assert "detail" in response.json()
    assert api.get(f"/clusters/{cid}").json() == before


@pytest.mark.parametrize("node_id", [None, 5, "", ["node-1"], {"$gt": ""}, "n" * 300])
def test_malformed_node_ids_are_refused(api: httpx.Client, cid: str, node_id: object) -> None:
    before = api.get(f"/clusters/{cid}").json()
    for path in (f"/remove-node/{cid}", f"/pre-checks/remove-node/{cid}"):
        response = api.post(path, json={"node_id": node_id})
        assert response.status_code == 422, (path, node_id, response.text)
    assert api.get(f"/clusters/{cid}").json() == before


def test_a_cluster_owner_cannot_reach_another_cluster_through_upstream_routes(
    server: RuntimeServer, api: httpx.Client, cid: str
) -> None:
    """The gateway's routes take the cluster id in the path; scoped tokens still apply."""
    other = f"up-{secrets.token_hex(4)}"
    assert api.post("/clusters", json={**copy.deepcopy(SEED), "id": other}).status_code == 201
    made = api.post("/tokens", json={"name": f"owner-{secrets.token_hex(4)}",
                                     "role": "cluster-owner", "clusters": [cid]})
    assert made.status_code == 201, made.text
    with server.client(made.json()["token"]) as owner:
        assert owner.post(f"/join-node/{cid}", json={"node_data": NODE}).status_code == 200
        for method, path, body in (
            ("POST", f"/join-node/{other}", {"node_data": NODE}),
            ("POST", f"/remove-node/{other}", {"node_id": "node-1"}),
            ("POST", f"/pre-checks/add-node/{other}", NODE),
            ("PUT", f"/clusters/update/{other}", {"tags": ["x"]}),
            ("POST", "/pre-check-policies/update?cluster_id=" + other, {"add_node": ""}),
        ):
            assert owner.request(method, path, json=body).status_code == 403, path
    assert len(api.get(f"/clusters/{other}").json()["nodes"]["nodeData"]) == 2

