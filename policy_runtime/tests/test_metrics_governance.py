"""Governance metrics of a real runtime process: governed actions' decisions, stability
checks, remote executions, the database's health, and the bound on cluster labels."""

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
from prometheus_client.parser import text_string_to_metric_families
from test_governance_api import publish_code, publish_example, set_map

from policy_runtime.embedded_db import EmbeddedDatabase

SEED = json.loads(SEED_CLUSTER.read_text())
STABILITY_CASES = EXAMPLES_DIR / "cluster-stability" / "cases"


@pytest.fixture(scope="module")
def server(embedded_db: EmbeddedDatabase,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """This module's own runtime: its tests read the series of the clusters they make."""
    yield from runtime_of_its_own(embedded_db, tmp_path_factory, "metrics")


def scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    """(sample name, sorted labels) -> value of one scrape of /metrics."""
    answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def new_cluster(client: httpx.Client, prefix: str, **config: str) -> str:
    document = {**copy.deepcopy(SEED), "id": f"{prefix}-{secrets.token_hex(4)}"}
    document["config"].update(config)
    assert client.post("/clusters", json=document).status_code == 201
    return document["id"]


def pre_check(client: httpx.Client, cluster_id: str, action: str, data: object) -> dict:
    answer = client.post(f"/pre-check/{action}", params={"cluster_id": cluster_id}, json=data)
    assert answer.status_code == 200, answer.text
    return answer.json()


def mgmt(client: httpx.Client, cluster_id: str, action: str, data: object = None) -> dict:
    answer = client.post("/mgmt", params={"cluster_id": cluster_id},
                         json={"block_id": "", "service": "stability_checker",
                               "mgmt_action": action, "mgmt_data": data})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_governed_decisions_are_counted_by_action_decision_and_outcome(
    api: httpx.Client,
) -> None:
    cluster_id = new_cluster(api, "metrics-gov")
    before = scrape(api)
    allow = publish_code(api, "return {'allowed': True}")
    deny = publish_code(api, "return {'allowed': False, 'reason': 'no'}")
    broken = publish_code(api, "raise ValueError('boom')")
    assert set_map(api, cluster_id, {"add_block": allow, "remove_block": deny,
                                     "scale_block": broken}).status_code == 200
    assert pre_check(api, cluster_id, "add_block", {})["allowed"] is True
    assert pre_check(api, cluster_id, "remove_block", {})["allowed"] is False
    assert pre_check(api, cluster_id, "remove_block", {})["allowed"] is False
    assert pre_check(api, cluster_id, "scale_block", {})["allowed"] is False
    assert pre_check(api, cluster_id, "block_mgmt", {})["allowed"] is True  # nothing mapped
    # warn lets the denial through: the action is allowed, the policy said no.
    warned = api.post("/pre-check-policies/enforcement", params={"cluster_id": cluster_id},
                      json={"remove_block": "warn"})
    assert warned.status_code == 200, warned.text
    assert pre_check(api, cluster_id, "remove_block", {})["allowed"] is True
    after = scrape(api)

    def grew(**labels: str) -> float:
        name = "aios_governance_decisions_total"
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew(action="add_block", decision="allowed", outcome="policy_allowed") == 1
    assert grew(action="remove_block", decision="denied", outcome="policy_denied") == 2
    assert grew(action="remove_block", decision="allowed", outcome="policy_denied") == 1
    assert grew(action="scale_block", decision="denied", outcome="policy_failed") == 1
    assert grew(action="block_mgmt", decision="allowed", outcome="no_policy") == 1
    per_cluster = "aios_governance_cluster_decisions_total"
    assert value(after, per_cluster, cluster_id=cluster_id, decision="denied") == 3
    assert value(after, per_cluster, cluster_id=cluster_id, decision="allowed") == 3
    assert value(after, "aios_database_up") == 1
    # No policy URI shows up anywhere in the metrics.
    text = api.get("/metrics").text
    assert allow not in text and deny not in text and broken not in text


def test_stability_checks_are_counted(api: httpx.Client) -> None:
    cluster_id = new_cluster(api, "metrics-stab")
    uri = publish_example(api, "cluster-stability")
    mgmt(api, cluster_id, "set_policy", {"policy_rule_uri": uri})
    before = scrape(api)
    unstable = json.loads((STABILITY_CASES / "unstable_gpu_and_cpu.json").read_text())
    api.put("/nodes-data", params={"cluster_id": cluster_id},
            json=unstable["input_data"]["nodes_data"])
    assert mgmt(api, cluster_id, "run_now")["is_stable"] is False
    middle = scrape(api)
    assert value(middle, "aios_cluster_stable", cluster_id=cluster_id) == 0
    assert value(middle, "aios_unstable_clusters") >= 1
    assert value(middle, "aios_stability_last_check_timestamp_seconds") > time.time() - 60
    stable = json.loads((STABILITY_CASES / "stable.json").read_text())
    api.put("/nodes-data", params={"cluster_id": cluster_id},
            json=stable["input_data"]["nodes_data"])
    assert mgmt(api, cluster_id, "run_now")["is_stable"] is True
    # A policy that fails counts as failed, and the cluster as not stable.
    mgmt(api, cluster_id, "set_policy",
         {"policy_rule_uri": publish_code(api, "raise ValueError('boom')")})
    assert mgmt(api, cluster_id, "run_now")["is_stable"] is False
    after = scrape(api)
    checks = "aios_stability_checks_total"
    for outcome in ("unstable", "stable", "failed"):
        grown = value(after, checks, outcome=outcome) - value(before, checks, outcome=outcome)
        assert grown == 1, outcome
    assert value(after, "aios_unstable_clusters") == value(middle, "aios_unstable_clusters")


@pytest.fixture()
def own_cluster_runtime(embedded_db: EmbeddedDatabase, tmp_path: Path) -> Iterator[tuple]:
    """A controller of its own cluster (the stability loop runs) that labels one cluster
    at most, and a cluster document for it in its database."""
    cluster_id = f"own-{secrets.token_hex(4)}"
    server = RuntimeServer(embedded_db.uri, secrets.token_urlsafe(16), tmp_path / "own.log",
                           AIOS_DB_NAME=f"aios_{cluster_id.replace('-', '_')}",
                           AIOS_CLUSTER_ID=cluster_id, AIOS_METRICS_MAX_CLUSTERS="1").start()
    yield server, cluster_id
    server.stop()


def test_the_loop_reports_its_interval_and_cluster_labels_are_capped(
    own_cluster_runtime: tuple,
) -> None:
    server, own_id = own_cluster_runtime
    with server.client() as client:
        assert value(scrape(client), "aios_stability_interval_seconds") == 0
        own = {**copy.deepcopy(SEED), "id": own_id}
        assert client.post("/clusters", json=own).status_code == 201
        uri = publish_example(client, "cluster-stability")
        mgmt(client, own_id, "set_policy", {"policy_rule_uri": uri})
        mgmt(client, own_id, "set_interval", {"interval_seconds": 2})
        # The loop may run a check under the interval it had before set_interval reached
        # it (a busy machine): wait for a check and for the new interval, each in turn.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            samples = scrape(client)
            if (value(samples, "aios_stability_last_check_timestamp_seconds") > 0
                    and value(samples, "aios_stability_interval_seconds") == 2):
                break
            time.sleep(0.3)
        assert value(samples, "aios_stability_interval_seconds") == 2
        assert value(samples, "aios_stability_last_check_timestamp_seconds") > 0
        assert ("aios_cluster_stable", (("cluster_id", own_id),)) in samples
        # Beyond AIOS_METRICS_MAX_CLUSTERS=1, clusters are counted as "other".
        others = [new_cluster(client, "capped") for _ in range(2)]
        for other in others:
            assert pre_check(client, other, "add_block", {})["allowed"] is True
        samples = scrape(client)
        assert value(samples, "aios_governance_cluster_decisions_total",
                     cluster_id="other", decision="allowed") == 2
        assert not any(other in str(key) for key in samples for other in others)
        mgmt(client, own_id, "pause")  # seen when the loop next looks, within an interval
        deadline = time.monotonic() + 10
        while value(scrape(client), "aios_stability_interval_seconds") != 0:
            assert time.monotonic() < deadline, "pausing sets the interval to 0"
            time.sleep(0.3)


@pytest.fixture()
def remote_pair(embedded_db: EmbeddedDatabase, tmp_path: Path) -> Iterator[tuple]:
    """A policies system (also the executor exec-1) and a controller in remote mode."""
    token = secrets.token_urlsafe(16)
    policies = RuntimeServer(embedded_db.uri, token, tmp_path / "policies.log",
                             AIOS_RUN_MODES="policies", AIOS_DB_NAME="aios_metrics_exec").start()
    controller = RuntimeServer(
        embedded_db.uri, secrets.token_urlsafe(16), tmp_path / "controller.log",
        AIOS_RUN_MODES="clusters,controller", AIOS_DB_NAME="aios_metrics_ctrl",
        POLICY_EXECUTION_MODE="remote", POLICY_SYSTEM_EXECUTOR_ID="exec-1",
        AIOS_POLICIES_URL=policies.url, AIOS_REMOTE_TOKEN=token,
        AIOS_REMOTE_TIMEOUT_SECONDS="3",
    ).start()
    yield policies, controller
    controller.stop()
    policies.stop()


def test_remote_executions_are_counted_by_outcome(remote_pair: tuple) -> None:
    policies, controller = remote_pair
    with policies.client() as system, controller.client() as ctrl:
        allow = publish_code(system, "return {'allowed': True}")
        broken = publish_code(system, "raise ValueError('boom')")
        assert system.post("/executors", json={"id": "exec-1", "url": policies.url}
                           ).status_code == 201
        assert system.post("/executors", json={"id": "dead", "url": "http://127.0.0.1:9"}
                           ).status_code == 201
        # The controller's POLICY_SYSTEM_EXECUTOR_ID, not the seed's executor.
        cluster_id = new_cluster(ctrl, "metrics-remote", policyExecutorId="")
        assert set_map(ctrl, cluster_id, {"add_block": allow, "scale_block": broken}
                       ).status_code == 200
        assert pre_check(ctrl, cluster_id, "add_block", {})["allowed"] is True
        assert pre_check(ctrl, cluster_id, "scale_block", {})["allowed"] is False
        counts = scrape(ctrl)
        assert value(counts, "aios_remote_executions_total", outcome="ok") == 1
        assert value(counts, "aios_remote_executions_total", outcome="failed") == 1
        assert value(counts, "aios_remote_execution_duration_seconds_count") == 2
        # The executor behind the policies system is gone: the policies system answers 502.
        moved = ctrl.post("/pre-check-policies/execution", params={"cluster_id": cluster_id},
                          json={"policyExecutionMode": "remote", "policyExecutorId": "dead"})
        assert moved.status_code == 200, moved.text
        assert pre_check(ctrl, cluster_id, "add_block", {})["allowed"] is False
        assert value(scrape(ctrl), "aios_remote_executions_total", outcome="unreachable") == 1
        # The policies system itself is gone.
        policies.stop()
        assert pre_check(ctrl, cluster_id, "add_block", {})["allowed"] is False
        counts = scrape(ctrl)
        assert value(counts, "aios_remote_executions_total", outcome="unreachable") == 2
        assert value(counts, "aios_governance_decisions_total", action="add_block",
                     decision="denied", outcome="policy_failed") == 2


def wait_for_registry(client: httpx.Client, wanted: object) -> float:
    """aios_registry_clusters once the health watcher (every 2 s) has counted ``wanted``
    (a number, or "nan")."""
    deadline = time.monotonic() + 20
    while True:
        seen = value(scrape(client), "aios_registry_clusters")
        if (seen != seen and wanted == "nan") or seen == wanted:
            return seen
        assert time.monotonic() < deadline, f"aios_registry_clusters stayed {seen}"
        time.sleep(0.3)


def test_the_registry_size_is_reported(api: httpx.Client) -> None:
    total = api.get("/clusters", params={"limit": 1}).json()["total"]
    wait_for_registry(api, total)
    new_cluster(api, "metrics-size")
    new_cluster(api, "metrics-size")
    wait_for_registry(api, total + 2)


def test_scrapes_answer_without_the_database_and_the_registry_size_is_nan(
    tmp_path: Path,
) -> None:
    """The count is taken with the health check, never by a scrape: with the database
    gone, /metrics still answers at once (else Prometheus would see the runtime down)."""
    database = EmbeddedDatabase(tmp_path / "db").start()
    server = RuntimeServer(database.uri, secrets.token_urlsafe(16), tmp_path / "r.log").start()
    try:
        with server.client() as client:
            wait_for_registry(client, 0)
            database.stop()
            with httpx.Client(base_url=server.url, timeout=1.0,
                              headers={"Authorization": f"Bearer {server.token}"}) as quick:
                wait_for_registry(quick, "nan")
                assert value(scrape(quick), "aios_database_up") == 0
    finally:
        server.stop()
        database.stop()
