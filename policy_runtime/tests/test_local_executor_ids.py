"""Executor ids the policies system answers itself (AIOS_LOCAL_EXECUTOR_IDS), against a real
runtime process: upstream's search server and resource allocator post remote decisions to
``/executor/executor-001/execute_policy`` of the policies system, and on a management cluster
no executor of that id is registered, so the policies system evaluates them in its own sandbox,
with the envelope of ``POST /execute_policy``."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import RuntimeServer
from policy_sources import ALLOW_ALL, eval_body

from policy_runtime.embedded_db import EmbeddedDatabase

LOCAL_IDS = ("executor-001", "here.2")
RAISES = eval_body('raise ValueError("no capacity")')


@pytest.fixture(scope="module")
def runtime(embedded_db: EmbeddedDatabase,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    folder = tmp_path_factory.mktemp("local-executors")
    server = RuntimeServer(embedded_db.uri, secrets.token_urlsafe(32), folder / "server.log",
                           AIOS_RUN_MODES="policies", AIOS_DB_NAME="aios_local_executors",
                           AIOS_LOCAL_EXECUTOR_IDS=" , ".join(LOCAL_IDS)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def published(runtime: RuntimeServer) -> dict[str, str]:
    uris = {}
    with runtime.client() as admin:
        for name, code in (("allow", ALLOW_ALL), ("raises", RAISES)):
            made = admin.post("/policies", json={"name": f"aiosv1.policies.local.{name}",
                                                 "version": "v1", "code": code})
            assert made.status_code in (200, 201), made.text
            uris[name] = made.json()["policy_rule_uri"]
    return uris


@pytest.mark.parametrize("executor_id", LOCAL_IDS)
def test_a_local_executor_id_is_evaluated_here_as_execute_policy_is(
    runtime: RuntimeServer, published: dict[str, str], executor_id: str,
) -> None:
    body = {"policy_rule_uri": published["allow"], "input_data": {"gpus": 2}}
    with runtime.client() as admin:
        here = admin.post(f"/executor/{executor_id}/execute_policy", json=body)
        direct = admin.post("/execute_policy", json=body)
    assert here.status_code == 200, here.text
    assert here.json() == direct.json() == {
        "success": True, "data": {"allowed": True, "input_data": {"gpus": 2}}}


def test_a_failing_policy_answers_as_execute_policy_does(
    runtime: RuntimeServer, published: dict[str, str],
) -> None:
    with runtime.client() as admin:
        for uri in (published["raises"], "aiosv1.policies.local.absent:v1"):
            body = {"policy_rule_uri": uri, "input_data": {}}
            here = admin.post("/executor/executor-001/execute_policy", json=body)
            direct = admin.post("/execute_policy", json=body)
            assert (here.status_code, here.json()) == (direct.status_code, direct.json())
            assert here.status_code >= 400 and here.json()["success"] is False, here.text


def test_other_ids_still_need_a_registered_executor(runtime: RuntimeServer) -> None:
    body = {"policy_rule_uri": "aiosv1.policies.local.allow:v1", "input_data": {}}
    with runtime.client() as admin:
        assert admin.post("/executor/executor-002/execute_policy", json=body).status_code == 404


def test_a_local_id_cannot_be_registered(runtime: RuntimeServer) -> None:
    with runtime.client() as admin:
        taken = admin.post("/executors", json={"id": "executor-001", "url": "http://127.0.0.1:9"})
    assert taken.status_code == 409, taken.text
    assert "AIOS_LOCAL_EXECUTOR_IDS" in taken.json()["detail"]


def test_evaluating_here_needs_the_eval_permission(
    runtime: RuntimeServer, published: dict[str, str],
) -> None:
    body = {"policy_rule_uri": published["allow"], "input_data": {}}
    with runtime.client() as admin:
        tokens = {role: admin.post("/tokens", json={
            "name": f"local-{role}-{secrets.token_hex(3)}", "role": role}).json()["token"]
            for role in ("executor", "reader")}
    url = f"{runtime.url}/executor/executor-001/execute_policy"
    allowed = httpx.post(url, json=body, headers={"Authorization": f"Bearer {tokens['executor']}"})
    assert allowed.status_code == 200 and allowed.json()["success"] is True, allowed.text
    refused = httpx.post(url, json=body, headers={"Authorization": f"Bearer {tokens['reader']}"})
    assert refused.status_code == 403, refused.text
    assert httpx.post(url, json=body).status_code == 401


def test_a_malformed_id_stops_the_start_naming_the_setting(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "policy_runtime", "serve", "--port", "0"],
        env={**os.environ, "AIOS_API_TOKEN": secrets.token_urlsafe(32),
             "AIOS_MONGO_URI": "mongodb://127.0.0.1:1/?directConnection=true",
             "AIOS_LOCAL_EXECUTOR_IDS": "executor-001,has space"},
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "local_executor_ids" in done.stderr and "'has space'" in done.stderr, done.stderr
