"""policy_execution_mode against a controller Deployment in the in-memory Kubernetes API."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_collection_module
from fake_kube_api import FakeKubernetes
from render_site import REPO

MODULE = REPO / "plugins" / "modules" / "policy_execution_mode.py"
CLUSTER = "cluster-west-vision-001"
OTHER_ENV = [{"name": "LOG_LEVEL", "value": "info"},
             {"name": "CLUSTER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]


def controller(containers: list[dict]) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{CLUSTER}-controller", "namespace": "controllers"},
        "spec": {"selector": {"matchLabels": {"app": "controller"}},
                 "template": {"metadata": {"labels": {"app": "controller"}},
                              "spec": {"containers": containers}}},
    }


@pytest.fixture()
def api(tmp_path: Path):
    fake = FakeKubernetes().start()
    yield fake, str(fake.kubeconfig(tmp_path / "kubeconfig"))
    fake.stop()


def env_of(fake: FakeKubernetes, index: int) -> list[dict]:
    deployment = fake.get("Deployment", f"{CLUSTER}-controller", "controllers")
    return deployment["spec"]["template"]["spec"]["containers"][index].get("env")


def test_switch_to_remote_and_back_merges_env_idempotently(api) -> None:
    fake, kubeconfig = api
    fake.add(controller([{"name": "controller", "image": "c"},
                         {"name": "sidecar", "image": "s"},
                         {"name": "policy-runtime", "image": "p", "env": OTHER_ENV}]))
    remote = {"cluster_id": CLUSTER, "mode": "remote", "executor_id": "executor-gpu-01",
              "kubeconfig": kubeconfig}

    preview = run_collection_module(MODULE, remote, check_mode=True)
    assert preview["changed"] is True and env_of(fake, 2) == OTHER_ENV
    assert preview["container"] == {"name": "policy-runtime", "index": 2}

    first = run_collection_module(MODULE, remote)
    assert first["changed"] is True
    assert env_of(fake, 2) == [*OTHER_ENV, {"name": "POLICY_EXECUTION_MODE", "value": "remote"},
                               {"name": "POLICY_SYSTEM_EXECUTOR_ID", "value": "executor-gpu-01"}]
    assert first["diff"]["before"]["env"] == OTHER_ENV
    assert fake.json_patches[-1][0] == {"op": "test", "value": "policy-runtime",
                                        "path": "/spec/template/spec/containers/2/name"}
    assert run_collection_module(MODULE, remote)["changed"] is False

    back = run_collection_module(MODULE, {"cluster_id": CLUSTER, "mode": "local",
                                          "kubeconfig": kubeconfig})
    assert back["changed"] is True
    assert env_of(fake, 2) == [*OTHER_ENV, {"name": "POLICY_EXECUTION_MODE", "value": "local"},
                               {"name": "POLICY_SYSTEM_EXECUTOR_ID", "value": ""}]
    assert env_of(fake, 0) is None  # the other containers are untouched


def test_falls_back_to_container_one_as_the_seed_does(api) -> None:
    fake, kubeconfig = api
    fake.add(controller([{"name": "controller", "image": "c"}, {"name": "policies", "image": "p"}]))
    result = run_collection_module(MODULE, {"cluster_id": CLUSTER, "mode": "remote",
                                            "executor_id": "x1", "kubeconfig": kubeconfig})
    assert result["changed"] is True and result["container"] == {"name": "policies", "index": 1}
    assert "patching container 1 (policies)" in str(result["warnings"])
    assert env_of(fake, 1)[0] == {"name": "POLICY_EXECUTION_MODE", "value": "remote"}


@pytest.mark.parametrize(("containers", "args", "message"), [
    ([{"name": "only", "image": "c"}], {"mode": "local"}, "no second container"),
    (None, {"mode": "local"}, "cannot read Deployment controllers/cluster-west-vision-001-control"),
    ([{"name": "a", "image": "a"}], {"mode": "remote"}, "missing: executor_id"),
])
def test_errors_name_the_problem(api, containers, args, message) -> None:
    fake, kubeconfig = api
    if containers:
        fake.add(controller(containers))
    result = run_collection_module(MODULE, {"cluster_id": CLUSTER, "kubeconfig": kubeconfig,
                                            **args})
    assert result["failed"] is True and message in result["msg"]
