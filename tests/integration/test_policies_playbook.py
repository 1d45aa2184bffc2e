"""playbooks/policies.yml against a running runtime, with inventory and survey variables."""

from __future__ import annotations

import copy
import json
import re
import secrets
from pathlib import Path

import httpx
import yaml
from render_site import REPO, run_playbook

SEED = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json").read_text())
SURVEY = json.loads((REPO / "playbooks" / "surveys" / "policies.json").read_text())
SPECS = yaml.safe_load((REPO / "roles/governance/meta/argument_specs.yml").read_text())


def new_cluster(url: str, headers: dict) -> str:
    cluster_id = f"gov-{secrets.token_hex(4)}"
    created = httpx.post(f"{url}/clusters", headers=headers,
                         json={**copy.deepcopy(SEED), "id": cluster_id})
    assert created.status_code == 201
    return cluster_id


def changed(output: str) -> int:
    return int(re.search(r"^localhost\s+: ok=\d+\s+changed=(\d+)", output, re.M).group(1))


def test_publish_map_and_stability_then_nothing_changes(runtime) -> None:
    url, token = runtime
    headers = {"Authorization": f"Bearer {token}"}
    cluster_id = new_cluster(url, headers)
    variables = {"aios_api_url": url, "aios_api_token": token, "aios_cluster_id": cluster_id,
                 "governance_policies_dir": str(REPO / "policies" / "examples"),
                 "governance_precheck_map": {"add_node": "add-node-gpu-minimum",
                                             "remove_block": ""},
                 "governance_stability_policy": "cluster-stability",
                 "governance_stability_parameters": {"min_healthy_ratio": 0.5},
                 "governance_stability_interval": 30}
    first = run_playbook("policies.yml", variables)
    assert first.returncode == 0, first.stdout + first.stderr
    assert token not in first.stdout

    page = httpx.get(f"{url}/policies", headers=headers, params={"limit": 500}).json()
    published = {p["policy_rule_uri"] for p in page["items"]}
    examples = [json.loads(p.read_text())
                for p in (REPO / "policies" / "examples").glob("*/policy.json")]
    assert len(examples) == 6
    assert {f"{e['name']}:{e['version']}-{e['release_tag']}" for e in examples} <= published
    cluster = httpx.get(f"{url}/clusters/{cluster_id}", headers=headers).json()
    policy_map = cluster["config"]["actionsPolicyMap"]
    assert policy_map["add_node"] == "aiosv1.policies.cluster-controller-gateway." \
        "add-node-gpu-minimum:v0.1.0-stable"
    assert "remove_block" not in policy_map
    checker = cluster["config"]["stabilityChecker"]
    assert checker["policyRuleURI"] == "aiosv1.policies.stability-checker.node-health:v0.1.0-stable"
    assert checker["parameters"] == {"min_healthy_ratio": 0.5} and checker["interval"] == 30

    again = run_playbook("policies.yml", variables)
    assert again.returncode == 0 and changed(again.stdout) == 0, again.stdout


def test_survey_variables_as_text(runtime) -> None:
    """An AWX survey passes JSON objects as text and booleans as strings."""
    url, token = runtime
    headers = {"Authorization": f"Bearer {token}"}
    cluster_id = new_cluster(url, headers)
    answers = {q["variable"]: q["default"] for q in SURVEY["spec"]}
    answers.update(governance_api_url=url, governance_api_token=token,
                   governance_cluster_id=cluster_id, governance_policies_dir="",
                   governance_precheck_map='{"update_cluster": "aiosv1.policies.x:v1"}')
    done = run_playbook("policies.yml", answers)
    assert done.returncode != 0 and "aiosv1.policies.x:v1" in done.stdout, "unknown URI refused"
    answers["governance_precheck_map"] = '{"remove_block": ""}'
    done = run_playbook("policies.yml", answers)
    assert done.returncode == 0, done.stdout + done.stderr


def test_survey_asks_only_for_documented_variables() -> None:
    options = SPECS["argument_specs"]["main"]["options"]
    for question in SURVEY["spec"]:
        assert question["variable"] in options, question["variable"]
        kind = options[question["variable"]]["type"]
        assert question["type"] in {"str": ("text", "password"), "dict": ("textarea",),
                                    "int": ("integer",), "bool": ("multiplechoice",)}[kind]


def test_missing_url_is_named(tmp_path: Path) -> None:
    done = run_playbook("policies.yml", {"governance_policies_dir": str(tmp_path)})
    assert done.returncode != 0 and "Set governance_api_url (or aios_api_url)" in done.stdout


def test_a_cluster_owner_token_governs_its_own_cluster_only(runtime) -> None:
    """The playbook needs no admin token: an owner token of the cluster, granted the
    examples' name prefixes, publishes and maps; another owner's cluster is refused."""
    url, admin = runtime
    admin_headers = {"Authorization": f"Bearer {admin}"}
    own, foreign = new_cluster(url, admin_headers), new_cluster(url, admin_headers)
    prefixes = sorted(p.name for p in (REPO / "policies" / "examples").iterdir() if p.is_dir())
    made = httpx.post(f"{url}/tokens", headers=admin_headers, json={
        "name": f"owner-{own}", "role": "cluster-owner", "clusters": [own],
        "policy_prefixes": prefixes})
    assert made.status_code == 201, made.text
    owner = made.json()["token"]
    variables = {"aios_api_url": url, "aios_api_token": owner, "aios_cluster_id": own,
                 "governance_policies_dir": str(REPO / "policies" / "examples"),
                 "governance_precheck_map": {"add_node": "add-node-gpu-minimum"}}
    first = run_playbook("policies.yml", variables)
    assert first.returncode == 0, first.stdout + first.stderr
    assert owner not in first.stdout
    cluster = httpx.get(f"{url}/clusters/{own}", headers=admin_headers).json()
    mapped = cluster["config"]["actionsPolicyMap"]["add_node"]
    assert mapped.endswith("add-node-gpu-minimum:v0.1.0-stable")
    again = run_playbook("policies.yml", variables)
    assert again.returncode == 0 and changed(again.stdout) == 0, again.stdout

    refused = run_playbook("policies.yml", {**variables, "aios_cluster_id": foreign})
    assert refused.returncode != 0 and "403" in refused.stdout, refused.stdout
    untouched = httpx.get(f"{url}/clusters/{foreign}", headers=admin_headers).json()
    assert "add_node" not in untouched["config"].get("actionsPolicyMap", {})
