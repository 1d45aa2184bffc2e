"""Remote execution with two real runtime processes: a controller and an executor.

The executor also plays the policies system (it registers itself as ``exec-1``); the
controller runs in remote mode, configured with upstream's variable names, and must fail
closed when the executor is gone.
"""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import EXAMPLES_DIR, SEED_CLUSTER, RuntimeServer

from policy_runtime.embedded_db import EmbeddedDatabase


@pytest.fixture()
def pair(embedded_db: EmbeddedDatabase, tmp_path: Path) -> Iterator[tuple]:
    executor_token = secrets.token_urlsafe(16)
    executor = RuntimeServer(embedded_db.uri, executor_token, tmp_path / "executor.log",
                             AIOS_RUN_MODES="policies", AIOS_DB_NAME="aios_exec").start()
    controller = RuntimeServer(
        embedded_db.uri, secrets.token_urlsafe(16), tmp_path / "controller.log",
        AIOS_RUN_MODES="clusters,controller", AIOS_DB_NAME="aios_ctrl",
        POLICY_EXECUTION_MODE="remote", POLICY_SYSTEM_EXECUTOR_ID="exec-1",
        AIOS_POLICIES_URL=executor.url, AIOS_REMOTE_TOKEN=executor_token,
        AIOS_REMOTE_TIMEOUT_SECONDS="3",
    ).start()
    yield executor, controller
    controller.stop()
    executor.stop()


def test_remote_decisions_and_fail_closed(pair: tuple) -> None:
    executor, controller = pair
    with executor.client() as policies, controller.client() as ctrl:
        directory = EXAMPLES_DIR / "add-node-gpu-minimum"
        document = json.loads((directory / "policy.json").read_text())
        document["code"] = (directory / "policy.py").read_text()
        uri = policies.post("/policies", json=document).json()["policy_rule_uri"]
        registered = policies.post("/executors", json={"id": "exec-1", "url": executor.url})
        assert registered.status_code == 201
        assert policies.get("/executors").json() == [{"id": "exec-1", "url": executor.url}]

        cluster = {**copy.deepcopy(json.loads(SEED_CLUSTER.read_text())), "id": "remote-1"}
        cluster["config"]["policyExecutorId"] = ""  # use the controller's POLICY_SYSTEM_EXECUTOR_ID
        assert ctrl.post("/clusters", json=cluster).status_code == 201
        missing = ctrl.post("/pre-check-policies/update", params={"cluster_id": "remote-1"},
                            json={"add_node": "aiosv1.policies.nope:v1"})
        assert missing.status_code == 400, "policies are looked up in the remote system"
        mapped = ctrl.post("/pre-check-policies/update", params={"cluster_id": "remote-1"},
                           json={"add_node": uri})
        assert mapped.status_code == 200, mapped.text

        cases = directory / "cases"
        good = json.loads((cases / "allowed_two_a100.json").read_text())
        bad = json.loads((cases / "denied_no_gpu.json").read_text())
        allowed = ctrl.post("/pre-check/add_node", params={"cluster_id": "remote-1"},
                            json=good["input_data"]).json()
        assert allowed["allowed"] is True and allowed["input_data"] == good["input_data"]
        denied = ctrl.post("/pre-check/add_node", params={"cluster_id": "remote-1"},
                           json=bad["input_data"]).json()
        assert denied["allowed"] is False and denied["reason"] == bad["expected"]["reason"]

        executor.stop()
        gone = ctrl.post("/pre-check/add_node", params={"cluster_id": "remote-1"},
                         json=good["input_data"]).json()
        assert gone["allowed"] is False, "an unreachable executor is a denial"
        assert "remote executor exec-1" in gone["reason"] and "fail closed" in gone["reason"]


def test_forwarding_to_an_unknown_or_dead_executor(pair: tuple) -> None:
    executor, _ = pair
    with executor.client() as policies:
        body = {"policy_rule_uri": "x:v1", "input_data": {}}
        unknown = policies.post("/executor/nobody/execute_policy", json=body)
        assert unknown.status_code == 404
        dead_url = {"id": "dead", "url": "http://127.0.0.1:9"}
        assert policies.post("/executors", json=dead_url).status_code == 201
        dead = policies.post("/executor/dead/execute_policy", json=body)
        assert dead.status_code == 502 and dead.json()["success"] is False
        assert "cannot reach" in dead.json()["message"]
        bad_url = policies.post("/executors", json={"id": "x", "url": "ftp://host"})
        assert bad_url.status_code == 422 and "http(s)" in bad_url.json()["detail"]
        again = policies.post("/executors", json={"id": "dead", "url": "http://127.0.0.1:7"})
        assert again.status_code == 409
        assert policies.delete("/executors/dead").status_code == 204
        assert policies.delete("/executors/dead").status_code == 404
    assert httpx.get(f"{executor.url}/executors").status_code == 401
