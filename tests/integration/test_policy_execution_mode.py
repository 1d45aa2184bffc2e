"""policy_execution_mode against a controller Deployment on a real control plane."""

from __future__ import annotations

import pytest
from conftest import run_collection_module
from control_plane import ControlPlane
from render_site import REPO

MODULE = REPO / "plugins" / "modules" / "policy_execution_mode.py"
CLUSTER = "cluster-west-vision-001"
OTHER_ENV = [{"name": "LOG_LEVEL", "value": "info"},
             {"name": "CLUSTER_ID",
              "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}]


def controller(containers: list[dict]) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"{CLUSTER}-controller", "namespace": "controllers"},
        "spec": {"selector": {"matchLabels": {"app": "controller"}},
                 "template": {"metadata": {"labels": {"app": "controller"}},
                              "spec": {"containers": containers}}},
    }


@pytest.fixture(scope="module")
def plane(start_control_plane) -> ControlPlane:
    return start_control_plane()


@pytest.fixture()
def api(plane: ControlPlane):
    plane.delete("Deployment", f"{CLUSTER}-controller", "controllers")
    plane.wait_for("the old controller's deletion", lambda: plane.get(
        "Deployment", f"{CLUSTER}-controller", "controllers") is None)
    return plane, str(plane.kubeconfig)


def env_of(plane: ControlPlane, index: int) -> list[dict]:
    deployment = plane.get("Deployment", f"{CLUSTER}-controller", "controllers")
    return deployment["spec"]["template"]["spec"]["containers"][index].get("env")


def test_switch_to_remote_and_back_merges_env_idempotently(api) -> None:
    kube, kubeconfig = api
    kube.add(controller([{"name": "controller", "image": "c"},
                         {"name": "sidecar", "image": "s"},
                         {"name": "policy-runtime", "image": "p", "env": OTHER_ENV}]))
    remote = {"cluster_id": CLUSTER, "mode": "remote", "executor_id": "executor-gpu-01",
              "kubeconfig": kubeconfig}

    preview = run_collection_module(MODULE, remote, check_mode=True)
    assert preview["changed"] is True and env_of(kube, 2) == OTHER_ENV
    assert preview["container"] == {"name": "policy-runtime", "index": 2}

    first = run_collection_module(MODULE, remote)
    assert first["changed"] is True
    assert env_of(kube, 2) == [*OTHER_ENV, {"name": "POLICY_EXECUTION_MODE", "value": "remote"},
                               {"name": "POLICY_SYSTEM_EXECUTOR_ID", "value": "executor-gpu-01"}]
    assert first["diff"]["before"]["env"] == OTHER_ENV
    assert run_collection_module(MODULE, remote)["changed"] is False

    back = run_collection_module(MODULE, {"cluster_id": CLUSTER, "mode": "local",
                                          "kubeconfig": kubeconfig})
    assert back["changed"] is True
    # The API server drops an empty value; the module writes what it reads back, so the
    # next run finds nothing to change.
    assert env_of(kube, 2) == [*OTHER_ENV, {"name": "POLICY_EXECUTION_MODE", "value": "local"},
                               {"name": "POLICY_SYSTEM_EXECUTOR_ID"}]
    assert env_of(kube, 0) is None  # the other containers are untouched
    local = {"cluster_id": CLUSTER, "mode": "local", "kubeconfig": kubeconfig}
    assert run_collection_module(MODULE, local)["changed"] is False


def test_falls_back_to_container_one_as_the_seed_does(api) -> None:
    kube, kubeconfig = api
    kube.add(controller([{"name": "controller", "image": "c"}, {"name": "policies", "image": "p"}]))
    result = run_collection_module(MODULE, {"cluster_id": CLUSTER, "mode": "remote",
                                            "executor_id": "x1", "kubeconfig": kubeconfig})
    assert result["changed"] is True and result["container"] == {"name": "policies", "index": 1}
    assert "patching container 1 (policies)" in str(result["warnings"])
    assert env_of(kube, 1)[0] == {"name": "POLICY_EXECUTION_MODE", "value": "remote"}


@pytest.mark.parametrize(("containers", "args", "message"), [
    ([{"name": "only", "image": "c"}], {"mode": "local"}, "no second container"),
    (None, {"mode": "local"}, "cannot read Deployment controllers/cluster-west-vision-001-control"),
    ([{"name": "a", "image": "a"}], {"mode": "remote"}, "missing: executor_id"),
])
def test_errors_name_the_problem(api, containers, args, message) -> None:
    kube, kubeconfig = api
    if containers:
        kube.add(controller(containers))
    result = run_collection_module(MODULE, {"cluster_id": CLUSTER, "kubeconfig": kubeconfig,
                                            **args})
    assert result["failed"] is True and message in result["msg"]
