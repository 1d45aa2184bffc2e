"""precheck_policies and cluster_mgmt against a running runtime."""

from __future__ import annotations

import copy
import json
import secrets

import httpx
from conftest import run_collection_module
from render_site import REPO

SEED = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json").read_text())
MODULES = REPO / "plugins" / "modules"


def test_precheck_map_and_stability_commands(runtime) -> None:
    url, token = runtime
    api = {"api_url": url, "api_token": token}
    cluster_id = f"mod-{secrets.token_hex(4)}"
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{url}/clusters", headers=headers,
                      json={**copy.deepcopy(SEED), "id": cluster_id}).status_code == 201
    uris = {}
    for name in ("add-node-gpu-minimum", "cluster-stability"):
        uris[name] = run_collection_module(
            MODULES / "policy.py", {"path": str(REPO / "policies/examples" / name), **api}
        )["policy_rule_uri"]

    args = {"cluster_id": cluster_id, "policies": {"add_node": uris["add-node-gpu-minimum"]}, **api}
    preview = run_collection_module(MODULES / "precheck_policies.py", args, check_mode=True)
    assert preview["changed"] is True
    assert "add_node" not in httpx.get(f"{url}/pre-check-policies", headers=headers,
                                       params={"cluster_id": cluster_id}).json()["actionsPolicyMap"]
    first = run_collection_module(MODULES / "precheck_policies.py", args)
    assert first["changed"] is True
    assert first["policy_map"]["add_node"] == uris["add-node-gpu-minimum"]
    assert first["diff"]["before"] == SEED["config"]["actionsPolicyMap"]
    assert run_collection_module(MODULES / "precheck_policies.py", args)["changed"] is False
    removed = run_collection_module(MODULES / "precheck_policies.py",
                                    {**args, "policies": {"add_node": ""}})
    assert removed["changed"] is True and "add_node" not in removed["policy_map"]
    bad = run_collection_module(MODULES / "precheck_policies.py",
                                {**args, "policies": {"launch": uris["add-node-gpu-minimum"]}})
    assert bad["failed"] is True and "unknown action 'launch'" in bad["msg"]

    mgmt = MODULES / "cluster_mgmt.py"
    policy = run_collection_module(mgmt, {"cluster_id": cluster_id, "action": "set_policy",
                                          "data": {"policy_rule_uri": uris["cluster-stability"]},
                                          **api})
    assert policy["changed"] is True
    assert policy["response"]["stabilityChecker"]["policyRuleURI"] == uris["cluster-stability"]
    same = run_collection_module(mgmt, {"cluster_id": cluster_id, "action": "set_policy",
                                        "data": {"policy_rule_uri": uris["cluster-stability"]},
                                        **api})
    assert same["changed"] is False
    run = run_collection_module(mgmt, {"cluster_id": cluster_id, "action": "run_now", **api})
    assert run["changed"] is False and run["response"]["is_stable"] is False  # no nodes pushed
