"""cluster and cluster_info against a running runtime."""

from __future__ import annotations

import copy
import json
import secrets

from conftest import run_collection_module
from render_site import REPO

SEED = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json").read_text())
CLUSTER = REPO / "plugins" / "modules" / "cluster.py"
INFO = REPO / "plugins" / "modules" / "cluster_info.py"


def test_cluster_lifecycle(runtime) -> None:
    url, token = runtime
    api = {"api_url": url, "api_token": token}
    cluster_id = f"life-{secrets.token_hex(4)}"
    document = copy.deepcopy(SEED)
    create = {"id": cluster_id, "document": document, **api}
    assert run_collection_module(CLUSTER, create, check_mode=True)["changed"] is True
    assert run_collection_module(INFO, {"id": cluster_id, **api})["clusters"] == []
    created = run_collection_module(CLUSTER, create)
    assert created["changed"] is True and created["cluster"]["id"] == cluster_id
    assert run_collection_module(CLUSTER, create)["changed"] is False

    fields = {"id": cluster_id, "fields": {"clusterMetadata.owner": "ops", "tags": ["gpu"]}, **api}
    updated = run_collection_module(CLUSTER, fields)
    assert updated["changed"] is True and updated["cluster"]["tags"] == ["gpu"]
    assert updated["diff"]["before"]["clusterMetadata.owner"] == SEED["clusterMetadata"]["owner"]
    assert run_collection_module(CLUSTER, fields)["changed"] is False
    invalid = run_collection_module(CLUSTER, {**fields, "fields": {"status": 5}})
    assert invalid["failed"] is True and "422" in invalid["msg"]

    found = run_collection_module(INFO, {"filter": {"id": cluster_id, "tags": "gpu"},
                                         "fields": "id,tags", **api})
    assert found["clusters"] == [{"id": cluster_id, "tags": ["gpu"]}]
    refused = run_collection_module(INFO, {"filter": {"$where": "1"}, **api})
    assert refused["failed"] is True and "$where is not allowed" in refused["msg"]

    delete = {"id": cluster_id, "state": "absent", **api}
    assert run_collection_module(CLUSTER, delete)["changed"] is True
    assert run_collection_module(CLUSTER, delete)["changed"] is False
    missing = run_collection_module(CLUSTER, {"id": cluster_id, "fields": {"tags": []}, **api})
    assert missing["failed"] is True and "does not exist" in missing["msg"]


def test_governed_update_is_allowed_or_denied_by_the_policy(runtime) -> None:
    url, token = runtime
    api = {"api_url": url, "api_token": token}
    cluster_id = f"gov-upd-{secrets.token_hex(4)}"
    assert run_collection_module(CLUSTER, {"id": cluster_id, "document": copy.deepcopy(SEED),
                                           **api})["changed"] is True
    guard = run_collection_module(REPO / "plugins/modules/policy.py", {
        "path": str(REPO / "policies/examples/update-cluster-field-guard"), **api})
    run_collection_module(REPO / "plugins/modules/precheck_policies.py", {
        "cluster_id": cluster_id, "policies": {"update_cluster": guard["policy_rule_uri"]}, **api})

    allowed = {"id": cluster_id, "governed": True, "fields": {"clusterMetadata.owner": "ops"},
               **api}
    first = run_collection_module(CLUSTER, allowed)
    assert first["changed"] is True and first["cluster"]["clusterMetadata"]["owner"] == "ops"
    assert run_collection_module(CLUSTER, allowed)["changed"] is False

    denied = run_collection_module(CLUSTER, {**allowed, "fields": {"status": "maintenance"}})
    assert denied["failed"] is True
    assert denied["msg"] == (f"the update_cluster policy {guard['policy_rule_uri']} denied the "
                             "update: protected fields cannot be updated: status")
    assert denied["decision"]["allowed"] is False
    after = run_collection_module(INFO, {"id": cluster_id, **api})["clusters"][0]
    assert after["status"] == SEED["status"], "a denied update changes nothing"
