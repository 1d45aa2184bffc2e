"""The policy module against a running runtime: publish, idempotence, errors, removal."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
from conftest import run_collection_module
from render_site import REPO

MODULE = REPO / "plugins" / "modules" / "policy.py"
EXAMPLE = REPO / "policies" / "examples" / "add-node-gpu-minimum"


def test_publish_is_idempotent_and_versions_are_immutable(runtime, tmp_path: Path) -> None:
    url, token = runtime
    api = {"api_url": url, "api_token": token}
    name = f"aiosv1.policies.test.module-{secrets.token_hex(3)}"
    args = {"path": str(EXAMPLE), "name": name, **api}
    assert run_collection_module(MODULE, args, check_mode=True)["changed"] is True
    first = run_collection_module(MODULE, args)
    assert first["changed"] is True and first["policy_rule_uri"] == f"{name}:v0.1.0-stable"
    assert run_collection_module(MODULE, args)["changed"] is False
    changed_code = tmp_path / "p.py"
    changed_code.write_text((EXAMPLE / "policy.py").read_text() + "\n# changed\n")
    clash = run_collection_module(MODULE, {**args, "path": str(changed_code),
                                           "version": "v0.1.0", "release_tag": "stable"})
    assert clash["failed"] is True and "publish a new version" in clash["msg"]
    removed = run_collection_module(MODULE, {"state": "absent",
                                             "policy_rule_uri": first["policy_rule_uri"], **api})
    assert removed["changed"] is True
    again = run_collection_module(MODULE, {"state": "absent",
                                           "policy_rule_uri": first["policy_rule_uri"], **api})
    assert again["changed"] is False


def test_compile_errors_name_the_line(runtime, tmp_path: Path) -> None:
    url, token = runtime
    broken = tmp_path / "broken.py"
    broken.write_text("class AIOSv1PolicyRule:\n    def eval(self:\n")
    result = run_collection_module(MODULE, {"path": str(broken), "name": "broken", "version": "v1",
                                            "api_url": url, "api_token": token})
    assert result["failed"] is True
    assert "CompileError" in result["msg"] and "Line 2" in result["msg"]


def test_a_policy_in_use_is_removed_only_with_force(runtime) -> None:
    """A pre-check map uses the policy: removal fails naming the cluster and action, force
    removes it, and the removed URI is never published again."""
    url, token = runtime
    api = {"api_url": url, "api_token": token}
    name = f"aiosv1.policies.test.inuse-{secrets.token_hex(3)}"
    uri = run_collection_module(MODULE, {"path": str(EXAMPLE), "name": name, **api})[
        "policy_rule_uri"]
    cluster_id = f"inuse-{secrets.token_hex(3)}"
    document = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json")
                          .read_text())
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.post(f"{url}/clusters", json={**document, "id": cluster_id},
                      headers=headers).status_code == 201
    mapped = httpx.post(f"{url}/pre-check-policies/update", headers=headers,
                        params={"cluster_id": cluster_id}, json={"add_node": uri})
    assert mapped.status_code == 200, mapped.text

    refused = run_collection_module(MODULE, {"state": "absent", "policy_rule_uri": uri, **api})
    assert refused["failed"] is True and cluster_id in refused["msg"], refused
    forced = run_collection_module(MODULE, {"state": "absent", "policy_rule_uri": uri,
                                            "force": True, **api})
    assert forced["changed"] is True, forced
    again = run_collection_module(MODULE, {"path": str(EXAMPLE), "name": name, **api})
    assert again["failed"] is True and "never" in again["msg"], again
