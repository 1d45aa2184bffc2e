"""The stability checker: configuration by /mgmt, checks, results, metric, and the lease."""

from __future__ import annotations

import copy
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import EXAMPLES_DIR, SEED_CLUSTER, RuntimeServer, runtime_of_its_own
from test_governance_api import publish_example

from policy_runtime.embedded_db import EmbeddedDatabase

SEED = json.loads(SEED_CLUSTER.read_text())
CASES = EXAMPLES_DIR / "cluster-stability" / "cases"


@pytest.fixture(scope="module")
def server(embedded_db: EmbeddedDatabase,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """This module's own runtime: its tests read the series of the clusters they make."""
    yield from runtime_of_its_own(embedded_db, tmp_path_factory, "stability")


@pytest.fixture()
def cluster_id(api: httpx.Client) -> str:
    document = {**copy.deepcopy(SEED), "id": f"stab-{secrets.token_hex(4)}"}
    assert api.post("/clusters", json=document).status_code == 201
    return document["id"]


def mgmt(api: httpx.Client, cluster_id: str, action: str, data: object = None) -> httpx.Response:
    return api.post("/mgmt", params={"cluster_id": cluster_id},
                    json={"block_id": "", "service": "stability_checker", "mgmt_action": action,
                          "mgmt_data": data})


def test_configure_push_and_check(api: httpx.Client, cluster_id: str) -> None:
    params = {"cluster_id": cluster_id}
    assert api.get("/check_stability", params=params).status_code == 404
    assert mgmt(api, cluster_id, "run_now").status_code == 409, "no policy configured yet"
    uri = publish_example(api, "cluster-stability")
    configured = mgmt(api, cluster_id, "set_policy", {"policy_rule_uri": uri})
    assert configured.status_code == 200
    assert configured.json()["stabilityChecker"]["policyRuleURI"] == uri
    case = json.loads((CASES / "unstable_gpu_and_cpu.json").read_text())
    pushed = api.put("/nodes-data", params=params, json=case["input_data"]["nodes_data"])
    assert pushed.json() == {"cluster_id": cluster_id, "nodes": 4}

    result = mgmt(api, cluster_id, "run_now").json()
    expected = dict(case["expected"]["stability_check_data"], cluster_id=cluster_id)
    assert result["is_stable"] is False and result["stability_check_data"] == expected
    latest = api.get("/check_stability", params=params).json()
    assert {k: latest[k] for k in ("is_stable", "stability_check_data", "policy_rule_uri")} == {
        "is_stable": False, "stability_check_data": expected, "policy_rule_uri": uri}
    assert latest["checked_at"]
    assert f'aios_cluster_stable{{cluster_id="{cluster_id}"}} 0.0' in api.get("/metrics").text

    stable = json.loads((CASES / "stable.json").read_text())
    api.put("/nodes-data", params=params, json=stable["input_data"]["nodes_data"])
    assert mgmt(api, cluster_id, "run_now").json()["is_stable"] is True
    assert f'aios_cluster_stable{{cluster_id="{cluster_id}"}} 1.0' in api.get("/metrics").text


def test_interval_pause_resume(api: httpx.Client, cluster_id: str) -> None:
    assert mgmt(api, cluster_id, "set_interval", {"interval_seconds": 5}).json()[
        "stabilityChecker"]["interval"] == 5
    again = mgmt(api, cluster_id, "set_interval", {"interval_seconds": 5}).json()
    assert again["changed"] is False, "the same setting again changes nothing"
    paused = mgmt(api, cluster_id, "pause").json()
    assert paused["stabilityChecker"]["paused"] is True and paused["changed"] is True
    assert mgmt(api, cluster_id, "resume").json()["stabilityChecker"]["paused"] is False
    assert mgmt(api, cluster_id, "set_interval", {"interval_seconds": 0}).status_code == 422


def test_other_actions_reach_the_policy(api: httpx.Client, cluster_id: str) -> None:
    uri = publish_example(api, "cluster-stability")
    lenient = {"policy_rule_uri": uri, "parameters": {"min_healthy_ratio": 0.5}}
    mgmt(api, cluster_id, "set_policy", lenient)
    answer = mgmt(api, cluster_id, "get_thresholds", {}).json()
    assert answer["result"]["parameters"]["min_healthy_ratio"] == 0.5


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"service": "vdag_controller", "mgmt_action": "pause"}, 400, "unknown service"),
        ({"service": "stability_checker", "mgmt_action": "set_policy",
          "mgmt_data": {"policy_rule_uri": "aiosv1.policies.nope:v1"}}, 400, "no policy"),
        ({"service": "stability_checker", "mgmt_action": "set_policy"}, 400, "policy_rule_uri"),
        ({"service": "stability_checker", "mgmt_action": "get_thresholds"}, 400,
         "no stability policy"),
    ],
)
def test_bad_commands(
    api: httpx.Client, cluster_id: str, body: dict, status: int, needle: str
) -> None:
    response = api.post("/mgmt", params={"cluster_id": cluster_id}, json=body)
    assert response.status_code == status and needle in response.json()["detail"]


def runner_of(server: RuntimeServer, cluster_id: str) -> str | None:
    with server.client() as client:
        response = client.get("/check_stability", params={"cluster_id": cluster_id})
    return response.json()["runner"] if response.status_code == 200 else None


def wait_for(predicate, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_one_replica_runs_the_loop_and_another_takes_over(
    embedded_db: EmbeddedDatabase, tmp_path: Path
) -> None:
    cluster_id = f"lease-{secrets.token_hex(4)}"
    token = secrets.token_urlsafe(16)
    env = {"AIOS_RUN_MODES": "policies,clusters,controller", "AIOS_DB_NAME": "aios_lease",
           "AIOS_CLUSTER_ID": cluster_id}
    first = RuntimeServer(embedded_db.uri, token, tmp_path / "a.log", **env).start()
    second = RuntimeServer(embedded_db.uri, token, tmp_path / "b.log", **env).start()
    try:
        with first.client() as api:
            document = {**copy.deepcopy(SEED), "id": cluster_id}
            assert api.post("/clusters", json=document).status_code == 201
            uri = publish_example(api, "cluster-stability")
            mgmt(api, cluster_id, "set_interval", {"interval_seconds": 0.3})
            mgmt(api, cluster_id, "set_policy", {"policy_rule_uri": uri})
            nodes = json.loads((CASES / "stable.json").read_text())["input_data"]["nodes_data"]
            api.put("/nodes-data", params={"cluster_id": cluster_id}, json=nodes)
        assert wait_for(lambda: runner_of(first, cluster_id) is not None)
        leader = runner_of(first, cluster_id)
        runners = set()
        for _ in range(10):  # several intervals: the same replica keeps the lease
            time.sleep(0.2)
            runners.add(runner_of(first, cluster_id))
        assert runners == {leader}
        pids = {str(first.proc.pid): first, str(second.proc.pid): second}
        leader_server = pids[leader.rsplit(":", 1)[1]]
        other = second if leader_server is first else first
        leader_server.stop()
        assert wait_for(lambda: runner_of(other, cluster_id) not in (None, leader), 10.0), (
            "the other replica must take over once the lease expires"
        )
    finally:
        first.stop()
        second.stop()


def test_a_stability_policy_keeps_its_context_per_cluster(api: httpx.Client) -> None:
    """Each cluster's checks see the context the previous check of that cluster left."""
    from test_governance_api import publish_code

    uri = publish_code(api, """
        context["checks"] = context.get("checks", 0) + 1
        return {"is_stable": True, "stability_check_data": {"checks": context["checks"]}}
    """, type="stability")
    clusters = []
    for _ in range(2):
        document = {**copy.deepcopy(SEED), "id": f"stab-{secrets.token_hex(4)}"}
        assert api.post("/clusters", json=document).status_code == 201
        assert mgmt(api, document["id"], "set_policy", {"policy_rule_uri": uri}).status_code == 200
        clusters.append(document["id"])
    first, second = clusters
    counts = [mgmt(api, first, "run_now").json()["stability_check_data"]["checks"]
              for _ in range(3)]
    assert counts == [1, 2, 3]
    assert mgmt(api, second, "run_now").json()["stability_check_data"]["checks"] == 1


def test_a_new_interval_takes_effect_before_the_old_one_runs_out(
    embedded_db: EmbeddedDatabase, tmp_path: Path
) -> None:
    """The loop's first check runs under the default interval (60 s); an interval set
    afterwards is used from the loop's next look (within a second), not after 60 s."""
    from test_governance_api import publish_code

    cluster_id = f"interval-{secrets.token_hex(4)}"
    env = {"AIOS_RUN_MODES": "policies,clusters,controller", "AIOS_DB_NAME": "aios_interval",
           "AIOS_CLUSTER_ID": cluster_id}
    server = RuntimeServer(embedded_db.uri, secrets.token_urlsafe(16), tmp_path / "s.log",
                           **env).start()

    def checks() -> int:
        with server.client() as client:
            latest = client.get("/check_stability", params={"cluster_id": cluster_id})
        return latest.json()["stability_check_data"]["checks"] if latest.status_code == 200 else 0

    try:
        with server.client() as api:
            assert api.post("/clusters", json={**copy.deepcopy(SEED), "id": cluster_id}
                            ).status_code == 201
            uri = publish_code(api, """
                context["checks"] = context.get("checks", 0) + 1
                return {"is_stable": True, "stability_check_data": {"checks": context["checks"]}}
            """, type="stability")
            assert mgmt(api, cluster_id, "set_policy", {"policy_rule_uri": uri}).status_code == 200
            assert wait_for(lambda: checks() == 1), "the loop runs a first check at once"
            mgmt(api, cluster_id, "set_interval", {"interval_seconds": 0.5})
        assert wait_for(lambda: checks() >= 3, 10.0), checks()
    finally:
        server.stop()
