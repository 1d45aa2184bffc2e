"""Governance never fails open (issue 28, items 8-12), against the real service process.

Each test drives the running server over HTTP and checks both the answer (a 4xx naming the
problem, never a 500) and that nothing changed that the governance policy did not allow.
Writes "by another replica or tool" go straight to the database, as such a writer would.
"""

from __future__ import annotations

import copy
import hashlib
import json
import secrets
from collections.abc import Iterator

import httpx
import pytest
from conftest import SEED_CLUSTER, RuntimeServer
from policy_sources import eval_body
from pymongo import MongoClient

from policy_runtime.embedded_db import EmbeddedDatabase

SEED = json.loads(SEED_CLUSTER.read_text())
DENY = "return {'allowed': False, 'reason': 'frozen by policy'}"
ALLOW = "return {'allowed': True, 'input_data': input_data}"


def publish(api: httpx.Client, body: str, *, name: str | None = None,
            version: str = "v1", release_tag: str = "") -> httpx.Response:
    name = name or f"aiosv1.policies.test.hard-{secrets.token_hex(4)}"
    return api.post("/policies", json={"name": name, "version": version,
                                       "release_tag": release_tag, "code": eval_body(body)})


def published(api: httpx.Client, body: str) -> str:
    response = publish(api, body)
    assert response.status_code == 201, response.text
    return response.json()["policy_rule_uri"]


def new_cluster(api: httpx.Client, prefix: str = "hard") -> dict:
    document = {**copy.deepcopy(SEED), "id": f"{prefix}-{secrets.token_hex(4)}"}
    response = api.post("/clusters", json=document)
    assert response.status_code == 201, response.text
    return response.json()


def set_map(api: httpx.Client, cluster_id: str, changes: dict) -> httpx.Response:
    return api.post("/pre-check-policies/update", params={"cluster_id": cluster_id}, json=changes)


def read(api: httpx.Client, cluster_id: str) -> dict:
    response = api.get(f"/clusters/{cluster_id}")
    assert response.status_code == 200, response.text
    return response.json()


def decisions(api: httpx.Client, cluster_id: str, action: str | None = None) -> list[dict]:
    params = {"cluster_id": cluster_id, **({"action": action} if action else {})}
    response = api.get("/decisions", params=params)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def database(embedded_db: EmbeddedDatabase) -> Iterator:
    client = MongoClient(embedded_db.uri)
    yield client["aios_test"]
    client.close()


def write_behind_the_api(database, cluster_id: str, update: dict) -> None:
    """What another replica, an older release or a database tool may have stored."""
    assert database["clusters"].update_one({"id": cluster_id}, update).matched_count == 1


# -- item 8: malformed map entries ------------------------------------------------------
MALFORMED = [
    pytest.param(["uri-a", "uri-b"], "a list", id="list"),
    pytest.param({"policy": "x"}, 'an object without a "policyRuleURI" string', id="object"),
    pytest.param(5, "int 5", id="number"),
    pytest.param(True, "true (a boolean)", id="true"),
]


@pytest.mark.parametrize(("entry", "described"), MALFORMED)
def test_malformed_map_entries_are_refused_when_set_and_deny_when_stored(
    api: httpx.Client, database, entry: object, described: str
) -> None:
    cluster = new_cluster(api)
    cid = cluster["id"]
    # Set through the governance route: 422 naming the action and the fix, map unchanged.
    refused = set_map(api, cid, {"update_cluster": entry})
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert detail.startswith(f"update_cluster: the entry is {described}")
    assert "give a policy URI string" in detail
    assert read(api, cid) == cluster
    # Brought in by a new cluster document: 422, nothing created.
    document = {**copy.deepcopy(SEED), "id": f"hard-{secrets.token_hex(4)}"}
    document["config"]["actionsPolicyMap"]["update_cluster"] = entry
    created = api.post("/clusters", json=document)
    assert created.status_code == 422 and "actionsPolicyMap.update_cluster" in created.text
    assert api.get(f"/clusters/{document['id']}").status_code == 404
    # Stored anyway (before this validation, or by another writer): the action is denied.
    write_behind_the_api(database, cid, {"$set": {"config.actionsPolicyMap.update_cluster": entry}})
    before = read(api, cid)
    denied = api.patch(f"/clusters/update/{cid}", json={"tags": ["changed"]})
    assert denied.status_code == 403, denied.text
    assert described in denied.json()["reason"] and "fail closed" in denied.json()["reason"]
    assert read(api, cid) == before
    dry = api.post("/pre-check/update_cluster", params={"cluster_id": cid}, json={})
    assert dry.status_code == 200 and dry.json()["allowed"] is False


def test_wrong_parameters_and_unreadable_maps_deny_instead_of_500(
    api: httpx.Client, database
) -> None:
    allow = published(api, ALLOW)
    cluster = new_cluster(api)
    cid = cluster["id"]
    bad_parameters = {"policyRuleURI": allow, "parameters": ["not", "an", "object"]}
    refused = set_map(api, cid, {"add_block": bad_parameters})
    assert refused.status_code == 422 and '"parameters" is a list' in refused.json()["detail"]
    good = set_map(api, cid, {"add_block": {"policyRuleURI": allow, "parameters": {"n": 1}}})
    assert good.status_code == 200, good.text
    assert good.json()["actionsPolicyMap"]["add_block"]["parameters"] == {"n": 1}

    write_behind_the_api(database, cid, {"$set": {"config.actionsPolicyMap.update_cluster": {
        "policyRuleURI": allow, "parameters": "loose"}}})
    before = read(api, cid)
    denied = api.patch(f"/clusters/update/{cid}", json={"tags": ["changed"]})
    assert denied.status_code == 403, denied.text
    assert '"parameters" is a string' in denied.json()["reason"]
    # A map that is not an object at all denies every governed action.
    write_behind_the_api(database, cid, {"$set": {"config.actionsPolicyMap": ["x"]}})
    denied = api.patch(f"/clusters/update/{cid}", json={"tags": ["changed"]})
    assert denied.status_code == 403 and "not an object" in denied.json()["reason"]
    assert read(api, cid)["tags"] == before["tags"]


# -- item 9: ungoverned routes cannot change what governance covers ---------------------
GENERIC_UPDATES = [
    {"$set": {"config.actionsEnforcement.update_cluster": "dryrun"}},
    {"$set": {"config.actionsEnforcement": {"update_cluster": "warn"}}},
    {"$set": {"config.policyExecutorId": "someone-elses-executor"}},
    {"$set": {"config.policyExecutionMode": "remote"}},
    {"$set": {"config.stabilityChecker": {"policyRuleURI": "x:v1"}}},
    {"$set": {"config.actionsPolicyMap.update_cluster": "ALLOW"}},
    {"$set": {"config.actionsPolicyMap": {}}},
    {"$unset": {"config.actionsPolicyMap": ""}},
    {"$unset": {"config.actionsPolicyMap.update_cluster": ""}},
    {"$unset": {"config.actionsEnforcement": "", "config.stabilityChecker": ""}},
    {"$set": {"config": "WHOLE_CONFIG"}},
    {"$set": {"tags": ["harmless"], "config.actionsPolicyMap.update_cluster": ""}},
    {"$rename": {"config.actionsPolicyMap": "config.customPolicySystem"}},
    {"$set": {"config.actionsPolicyMap.update_cluster.policyRuleURI": "ALLOW"}},
    {"$set": {"config.actionsPolicyMap.update_cluster": "ALLOW"}},
    # array and positional forms, on the entry's parameters
    {"$push": {"config.actionsPolicyMap.update_cluster.parameters.levels": 3}},
    {"$pull": {"config.actionsPolicyMap.update_cluster.parameters.levels": 1}},
    {"$pop": {"config.actionsPolicyMap.update_cluster.parameters.levels": 1}},
    {"$set": {"config.actionsPolicyMap.update_cluster.parameters.levels.0": 9}},
    {"$set": {"config.actionsPolicyMap.update_cluster.parameters.levels.$[]": 0}},
    {"$inc": {"config.actionsPolicyMap.update_cluster.parameters.levels.1": 1}},
]


def test_generic_updates_cannot_switch_governance_off_or_re_point_it(
    api: httpx.Client, database
) -> None:
    deny, allow = published(api, DENY), published(api, ALLOW)
    cluster = new_cluster(api)
    cid = cluster["id"]
    # upstream's form of an entry, with an array among its parameters
    entry = {"policyRuleURI": deny, "parameters": {"levels": [1, 2]}}
    write_behind_the_api(database, cid, {"$set": {"config.actionsPolicyMap.update_cluster": entry,
                                                  "config.actionsEnforcement.remove_node": "warn"}})
    before = read(api, cid)
    whole = {**copy.deepcopy(before["config"]), "actionsPolicyMap": {"update_cluster": allow}}
    for update in GENERIC_UPDATES:
        body = json.loads(json.dumps(update).replace('"ALLOW"', json.dumps(allow))
                          .replace('"WHOLE_CONFIG"', json.dumps(whole)))
        response = api.put(f"/clusters/{cid}", json=body)
        assert 400 <= response.status_code < 500, (body, response.status_code, response.text)
        assert read(api, cid) == before, body
    refused = api.put(f"/clusters/{cid}", json={"$set": {
        "config.actionsEnforcement.update_cluster": "dryrun"}})
    assert refused.status_code == 400
    assert "actionsEnforcement" in refused.json()["detail"]
    assert "POST /pre-check-policies/enforcement" in refused.json()["detail"]
    # Other config fields, and a whole config that leaves governance as it is, still update.
    same = {**copy.deepcopy(before["config"]), "publicHostname": "renamed.example.net"}
    assert api.put(f"/clusters/{cid}", json={"$set": {"config": same}}).status_code == 200
    # And the next denied update is still denied.
    denied = api.patch(f"/clusters/update/{cid}", json={"tags": ["x"]})
    assert denied.status_code == 403 and denied.json()["reason"] == "frozen by policy"


def test_the_governed_update_cannot_change_governance_fields(api: httpx.Client) -> None:
    allow = published(api, ALLOW)
    rewriter = published(api, (
        "update = dict(input_data['update'])\n"
        "update['config.actionsEnforcement.remove_node'] = 'dryrun'\n"
        "return {'allowed': True, 'input_data': {**input_data, 'update': update}}"))
    cluster = new_cluster(api)
    cid = cluster["id"]
    assert set_map(api, cid, {"update_cluster": allow}).status_code == 200
    before = read(api, cid)
    whole = {**copy.deepcopy(before["config"]), "actionsPolicyMap": {}}
    for fields in ({"config.actionsEnforcement.update_cluster": "dryrun"},
                   {"config.actionsPolicyMap": {}},
                   {"config.policyExecutorId": "elsewhere"},
                   {"config.stabilityChecker.paused": True},
                   {"config": whole}):
        response = api.patch(f"/clusters/update/{cid}", json=fields)
        assert response.status_code == 400, (fields, response.text)
        assert "governance" in response.json()["detail"]
        assert read(api, cid) == before
    # A policy that rewrites an update into a governance change is refused too.
    assert set_map(api, cid, {"update_cluster": rewriter}).status_code == 200
    before = read(api, cid)
    rewritten = api.patch(f"/clusters/update/{cid}", json={"tags": ["t"]})
    assert rewritten.status_code == 400 and "actionsEnforcement" in rewritten.json()["detail"]
    assert read(api, cid) == before
    # The governance routes themselves do change them.
    params = {"cluster_id": cid}
    modes = api.post("/pre-check-policies/enforcement", params=params,
                     json={"update_cluster": "warn"})
    assert modes.status_code == 200 and modes.json()["actionsEnforcement"] == {
        "update_cluster": "warn"}
    bad = api.post("/pre-check-policies/enforcement", params=params, json={"add_node": "off"})
    assert bad.status_code == 422 and "add_node" in bad.json()["detail"]
    execution = api.post("/pre-check-policies/execution", params=params,
                         json={"policyExecutorId": "exec-9"})
    assert execution.status_code == 200 and execution.json()["policyExecutorId"] == "exec-9"
    assert read(api, cid)["config"]["policyExecutorId"] == "exec-9"


# -- item 10: every creation path runs the add_cluster pre-check ------------------------
@pytest.fixture(scope="module")
def controller(
    embedded_db: EmbeddedDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RuntimeServer, str]]:
    own = f"own-{secrets.token_hex(4)}"
    log_path = tmp_path_factory.mktemp("own-controller") / "server.log"
    runtime = RuntimeServer(embedded_db.uri, secrets.token_urlsafe(32), log_path,
                            AIOS_CLUSTER_ID=own).start()
    yield runtime, own
    runtime.stop()


def creations(document: dict) -> list[tuple[str, dict]]:
    parser = {"header": {"templateUri": "Parser/V1"},
              "body": {"spec": {"values": document}}}
    return [("/clusters", document), ("/api/createCluster", document),
            ("/api/createCluster", parser), ("/clusters/create", document)]


def test_every_creation_path_runs_the_add_cluster_pre_check(
    controller: tuple[RuntimeServer, str], database
) -> None:
    runtime, own = controller
    with runtime.client() as api:
        # The controller's own cluster: before it exists no policy can be mapped.
        assert api.post("/clusters", json={**copy.deepcopy(SEED), "id": own}).status_code == 201
        deny = published(api, DENY)
        assert set_map(api, own, {"add_cluster": deny}).status_code == 200
        for key in ("add_cluster", "create_cluster"):  # ours, and upstream's key as stored
            write_behind_the_api(database, own, {"$set": {
                "config.actionsPolicyMap": {key: deny}}})
            for route, body in creations({**copy.deepcopy(SEED), "id": f"new-{key[:3]}"}):
                response = api.post(route, json=body)
                assert response.status_code == 403, (key, route, response.text)
                assert response.json()["reason"] == "frozen by policy"
                assert api.get(f"/clusters/new-{key[:3]}").status_code == 404, (key, route)
        logged = decisions(api, own, "add_cluster")
        assert len(logged) >= 8 and not any(d["allowed"] for d in logged[:8])
        assert all(d["policy_rule_uri"] == deny and not d["dry_check"] for d in logged[:8])
        # Allowed by the policy: every route creates.
        allow = published(api, ALLOW)
        assert set_map(api, own, {"create_cluster": allow}).status_code == 200
        for index in range(4):
            document = {**copy.deepcopy(SEED), "id": f"ok-{secrets.token_hex(4)}"}
            route, body = creations(document)[index]
            response = api.post(route, json=body)
            # The upstream routes answer 200 {"success", "data"}, as upstream does.
            assert response.status_code == (201 if route == "/clusters" else 200), (
                route, response.text)
            assert api.get(f"/clusters/{document['id']}").status_code == 200
        assert decisions(api, own, "add_cluster")[0]["policy_rule_uri"] == allow


def test_a_registry_without_controller_mode_refuses_governed_creation(
    controller: tuple[RuntimeServer, str], embedded_db: EmbeddedDatabase,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    runtime, own = controller
    with runtime.client() as api:
        if api.get(f"/clusters/{own}").status_code == 404:
            assert api.post("/clusters", json={**copy.deepcopy(SEED), "id": own}).status_code == 201
        assert set_map(api, own, {"add_cluster": published(api, DENY)}).status_code == 200
    log_path = tmp_path_factory.mktemp("registry-only") / "server.log"
    registry = RuntimeServer(embedded_db.uri, secrets.token_urlsafe(32), log_path,
                             AIOS_CLUSTER_ID=own, AIOS_RUN_MODES="clusters").start()
    try:
        with registry.client() as api:
            document = {**copy.deepcopy(SEED), "id": f"reg-{secrets.token_hex(4)}"}
            for route, body in creations(document)[:3]:
                refused = api.post(route, json=body)
                assert refused.status_code == 403, (route, refused.text)
                assert "controller" in refused.json()["detail"]
                assert api.get(f"/clusters/{document['id']}").status_code == 404
            with runtime.client() as ctrl:
                assert set_map(ctrl, own, {"add_cluster": ""}).status_code == 200
            assert api.post("/clusters", json=document).status_code == 201
    finally:
        registry.stop()


# -- item 11: published URIs are never reused -------------------------------------------
def test_a_referenced_policy_cannot_be_swapped(api: httpx.Client, database) -> None:
    name = f"aiosv1.policies.test.swap-{secrets.token_hex(4)}"
    first = publish(api, DENY, name=name, version="v1", release_tag="stable")
    assert first.status_code == 201, first.text
    uri = first.json()["policy_rule_uri"]
    code_sha256 = api.get(f"/policies/{uri}").json()["code_sha256"]
    assert code_sha256 == hashlib.sha256(eval_body(DENY).encode()).hexdigest()
    cluster = new_cluster(api)
    cid = cluster["id"]
    assert set_map(api, cid, {"update_cluster": uri}).status_code == 200
    denied = api.patch(f"/clusters/update/{cid}", json={"tags": ["x"]})
    assert denied.status_code == 403 and denied.json()["code_sha256"] == code_sha256
    assert decisions(api, cid, "update_cluster")[0]["code_sha256"] == code_sha256

    # Deleting what a map runs is refused, naming the cluster and the action.
    for route in (f"/policies/{uri}", f"/policy/{uri}"):
        refused = api.delete(route)
        assert refused.status_code == 409, refused.text
        assert f"{cid}: update_cluster" in refused.text and "force=true" in refused.text
    assert api.get(f"/policies/{uri}").status_code == 200
    # Forced, it is recorded, and the URI stays taken: no other code, nor the same.
    assert api.delete(f"/policies/{uri}", params={"force": "true"}).status_code == 204
    event = decisions(api, cid, "update_cluster")[0]
    assert event["event"] == "policy_deleted" and event["forced"] is True
    assert event["policy_rule_uri"] == uri and event["code_sha256"] == code_sha256
    for body in (ALLOW, DENY):
        again = publish(api, body, name=name, version="v1", release_tag="stable")
        assert again.status_code == 409, again.text
        assert "never reused" in again.json()["detail"]
    assert api.get(f"/policies/{uri}").status_code == 404
    assert uri not in {p["policy_rule_uri"] for p in api.get(
        "/policies", params={"name": name}).json()["items"]}
    before = read(api, cid)
    still = api.patch(f"/clusters/update/{cid}", json={"tags": ["x"]})
    assert still.status_code == 403 and "not published" in still.json()["reason"]
    assert read(api, cid) == before
    # An unreferenced policy deletes without force, and its URI is not reusable either.
    loose = published(api, ALLOW)
    assert api.delete(f"/policies/{loose}").status_code == 204
    assert api.delete(f"/policies/{loose}").status_code == 404
    name_, _, version = loose.partition(":")
    assert publish(api, ALLOW, name=name_, version=version).status_code == 409
    stored = database["policies"].find_one({"policy_rule_uri": loose})
    assert stored["deleted"] is True and stored["deleted_with_force"] is False


# -- item 12: the decision log has no forgeries and no gaps ------------------------------
def test_dry_checks_are_marked_and_every_governed_action_is_logged(api: httpx.Client) -> None:
    deny = published(api, DENY)
    cluster = new_cluster(api)
    cid = cluster["id"]
    # No policy mapped: the governed action is allowed, and logged as such.
    allowed = api.patch(f"/clusters/update/{cid}", json={"tags": ["one"]})
    assert allowed.status_code == 200, allowed.text
    entry = decisions(api, cid, "update_cluster")[0]
    assert entry["allowed"] is True and entry["reason"] == "no pre-check policy mapped"
    assert entry["policy_rule_uri"] == "" and entry["dry_check"] is False
    # A dry check is marked, in its answer and in the log.
    assert set_map(api, cid, {"update_cluster": deny}).status_code == 200
    dry = api.post("/pre-check/update_cluster", params={"cluster_id": cid},
                   json={"cluster_id": cid, "update": {"tags": ["x"]}})
    assert dry.status_code == 200 and dry.json()["dry_check"] is True
    logged = decisions(api, cid, "update_cluster")[0]
    assert logged["dry_check"] is True and logged["allowed"] is False
    # The real governed action is not.
    assert api.patch(f"/clusters/update/{cid}", json={"tags": ["two"]}).status_code == 403
    real = decisions(api, cid, "update_cluster")[0]
    assert real["dry_check"] is False and real["allowed"] is False
    assert real["policy_rule_uri"] == deny
    assert read(api, cid)["tags"] == ["one"]
