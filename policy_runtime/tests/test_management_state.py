"""Management commands have a lasting effect: what a policy's management() sets is kept
per cluster and used by every later command and stability check."""

from __future__ import annotations

import httpx
from test_governance_api import publish_example
from test_stability import cluster_id, mgmt  # noqa: F401 (cluster_id is a fixture)

HOT_NODES = [
    {"id": "node-1", "ready": True, "cpu_percent": 40, "memory_percent": 50,
     "gpus": [{"health": "ok", "temperature_c": 78}]},
    {"id": "node-2", "ready": True, "cpu_percent": 60, "memory_percent": 70,
     "gpus": [{"health": "ok", "temperature_c": 80}]},
]


def test_set_thresholds_lasts_through_mgmt_and_the_stability_loop(
    api: httpx.Client, cluster_id: str  # noqa: F811
) -> None:
    uri = publish_example(api, "cluster-stability")
    assert mgmt(api, cluster_id, "set_policy", {"policy_rule_uri": uri}).status_code == 200
    api.put("/nodes-data", params={"cluster_id": cluster_id}, json=HOT_NODES)
    assert mgmt(api, cluster_id, "run_now").json()["is_stable"] is True  # 80 C <= 85 C

    answer = mgmt(api, cluster_id, "set_thresholds", {"max_gpu_temperature_c": 75})
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["parameters"]["max_gpu_temperature_c"] == 75
    assert answer.json()["stabilityChecker"]["parameters"] == {"max_gpu_temperature_c": 75}

    got = mgmt(api, cluster_id, "get_thresholds", {}).json()
    assert got["result"]["parameters"]["max_gpu_temperature_c"] == 75
    assert "stabilityChecker" not in got, "a read changes nothing"
    checked = mgmt(api, cluster_id, "run_now").json()
    assert checked["is_stable"] is False
    assert checked["stability_check_data"]["unstable_nodes"] == {
        "node-1": ["gpu0 78C"], "node-2": ["gpu0 80C"]}
    stored = api.get(f"/clusters/{cluster_id}").json()["config"]["stabilityChecker"]
    assert stored["parameters"] == {"max_gpu_temperature_c": 75}


def test_thresholds_are_kept_per_cluster(
    api: httpx.Client, cluster_id: str  # noqa: F811
) -> None:
    uri = publish_example(api, "cluster-stability")
    mgmt(api, cluster_id, "set_policy", {"policy_rule_uri": uri})
    mgmt(api, cluster_id, "set_thresholds", {"min_healthy_ratio": 0.25})
    other = f"{cluster_id}-b"
    document = api.get(f"/clusters/{cluster_id}").json()
    document = {**document, "id": other,
                "config": {**document["config"], "stabilityChecker": None}}
    document.pop("_id", None)
    assert api.post("/clusters", json=document).status_code == 201, "a second cluster"
    mgmt(api, other, "set_policy", {"policy_rule_uri": uri})
    assert mgmt(api, other, "get_thresholds", {}).json()["result"]["parameters"][
        "min_healthy_ratio"] == 0.75
    assert mgmt(api, cluster_id, "get_thresholds", {}).json()["result"]["parameters"][
        "min_healthy_ratio"] == 0.25


def test_parameters_that_break_the_schema_are_not_kept(
    api: httpx.Client, cluster_id: str, unique_name: str  # noqa: F811
) -> None:
    code = (
        "class AIOSv1PolicyRule:\n"
        "    def __init__(self, rule_id, settings, parameters):\n"
        "        self.parameters = dict(parameters)\n"
        "    def eval(self, parameters, input_data, context):\n"
        "        return {'is_stable': True, 'stability_check_data': {}}\n"
        "    def management(self, action, data):\n"
        "        return {'status': 'success', 'parameters': data}\n"
    )
    body = {"name": unique_name, "version": "v1", "code": code, "type": "stability_checker",
            "policy_parameters": {"limit": 1},
            "policy_parameters_schema": {"type": "object",
                                         "properties": {"limit": {"type": "integer"}}}}
    assert api.post("/policies", json=body).status_code == 201
    mgmt(api, cluster_id, "set_policy", {"policy_rule_uri": f"{unique_name}:v1"})
    bad = mgmt(api, cluster_id, "set", {"limit": "many"})
    assert bad.status_code == 422 and "policy_parameters_schema" in bad.text, bad.text
    stored = api.get(f"/clusters/{cluster_id}").json()["config"]["stabilityChecker"]
    assert stored["parameters"] == {}
