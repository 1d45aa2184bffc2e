"""The roles in apply mode against an in-memory Kubernetes API (fake_kube_api.py).

A real cluster is exercised by test_kubernetes_cluster.py when KUBECONFIG is set; here
the same playbooks drive kubernetes.core against a fake API server seeded with the
realistic node fixtures of the unit tests.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fake_kube_api import FakeKubernetes
from render_site import REPO, run_playbook

FIXTURES = REPO / "tests" / "unit" / "fixtures"
SEED_DEPLOYMENTS = {
    "blocks-db", "clusters-db", "policies-system", "vdag-db", "assets-db-registry",
    "adhoc-server-registry", "templates-registry", "spec-registry", "tasks-db",
    "containers-registry", "layers-registry", "splits-runners-registry", "components-registry",
    "search-server", "resource-allocator", "vdag-processor", "failure-notifier", "metrics-redis",
    "global-block-metrics", "global-cluster-metrics", "global-vdag-metrics", "parser",
    "cluster-controller-gateway",
}


def cluster(*fixtures: str, never_ready: tuple[str, ...] = ()) -> FakeKubernetes:
    fake = FakeKubernetes(never_ready=never_ready).start()
    for name in fixtures:
        for item in yaml.safe_load((FIXTURES / name).read_text())["items"]:
            fake.add(item)
    return fake


def playbook(fake: FakeKubernetes, tmp: Path, name: str = "site.yml", *args: str,
             inventory: str = "localhost,", **extra: object) -> subprocess.CompletedProcess:
    variables = {"aios_kubeconfig": str(fake.kubeconfig(tmp / "kubeconfig")), **extra}
    return run_playbook(name, variables, "-c", "local", *args, inventory=inventory)


def names(fake: FakeKubernetes, kind: str) -> set[str]:
    return {o["metadata"]["name"] for o in fake.objects.values() if o["kind"] == kind}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    fake = cluster("nodes_good.yml", "daemonsets_calico.yml", "services_free.yml")
    tmp = tmp_path_factory.mktemp("apply")
    first = playbook(fake, tmp)
    token = (fake.get("Secret", "aios-policy-runtime-token", "registries") or {}).get("stringData")
    second = playbook(fake, tmp)
    yield fake, tmp, first, second, token
    fake.stop()


def test_install_applies_every_component(installed: tuple) -> None:
    fake, _, first, _, _ = installed
    assert first.returncode == 0, first.stdout[-4000:]
    assert names(fake, "Deployment") == SEED_DEPLOYMENTS
    assert {fake.get("StatefulSet", n, ns)["spec"]["replicas"]
            for n, ns in (("registry", "registries"), ("metrics-db", "metrics-system"))} == {3}
    assert fake.get("Job", "registry-init-client", "registries") is not None
    assert "Preflight passed: 4 nodes checked" in first.stdout
    patches = [path for method, path in fake.requests if method == "PATCH"]
    assert patches and all(
        "fieldManager=aios.platform" in path and "force=true" in path.lower() for path in patches
    )


def test_second_run_changes_nothing(installed: tuple) -> None:
    _, _, _, second, _ = installed
    assert second.returncode == 0, second.stdout[-4000:]
    assert "changed=0" in second.stdout


def test_generated_token_is_kept(installed: tuple) -> None:
    fake, _, first, _, token = installed
    assert token and len(token["token"]) == 48
    assert fake.get("Secret", "aios-policy-runtime-token", "registries")["stringData"] == token
    assert token["token"] not in first.stdout, "the token must never be logged"


def test_uninstall_one_part_keeps_the_others(installed: tuple) -> None:
    fake, tmp, *_ = installed
    done = playbook(fake, tmp, "uninstall.yml", "--tags", "metrics")
    assert done.returncode == 0, done.stdout[-4000:]
    deployments = names(fake, "Deployment")
    assert not deployments & {"metrics-redis", "global-block-metrics", "global-cluster-metrics",
                              "global-vdag-metrics"}
    assert {"blocks-db", "parser"} <= deployments
    assert fake.get("StatefulSet", "metrics-db", "metrics-system") is not None, "metrics_db stays"


def test_check_mode_changes_nothing(tmp_path: Path) -> None:
    fake = cluster("nodes_good.yml", "daemonsets_calico.yml")
    before = dict(fake.objects)
    try:
        done = playbook(fake, tmp_path, "site.yml", "--check", aios_components=["services"])
        assert done.returncode == 0, done.stdout[-4000:]
        assert fake.objects == before
        assert "changed=" in done.stdout and "changed=0" not in done.stdout
    finally:
        fake.stop()


def test_preflight_reports_every_problem_at_once(tmp_path: Path) -> None:
    fake = cluster("nodes_two_workers_6gb.yml", "daemonsets_no_cni.yml", "services_taken.yml")
    try:
        done = playbook(fake, tmp_path)
        assert done.returncode != 0
        for problem in ("found 2 worker node(s)", "aios-worker-2 has 6.2 GB RAM",
                        "no CNI found", "NodePort 30100 (for registries/blocks-db-svc) is already "
                        "used by service monitoring/grafana"):
            assert problem in done.stdout, problem
        assert not [m for m, _ in fake.requests if m in ("PATCH", "POST", "DELETE")]
        lenient = playbook(fake, tmp_path, aios_preflight_strict=False, aios_components=[])
        assert lenient.returncode == 0 and "WARNING: preflight found" in lenient.stdout
    finally:
        fake.stop()


def test_component_that_never_becomes_ready_is_named(tmp_path: Path) -> None:
    fake = cluster("nodes_good.yml", "daemonsets_calico.yml", never_ready=("parser",))
    try:
        done = playbook(fake, tmp_path, aios_components=["services"], aios_apply_timeout=3)
        assert done.returncode != 0
        assert "core_services: parser did not become ready within 3 s" in done.stdout
    finally:
        fake.stop()


def test_node_labels_come_from_the_inventory(tmp_path: Path) -> None:
    nodes = yaml.safe_load((FIXTURES / "nodes_good.yml").read_text())["items"]
    fake = cluster("daemonsets_calico.yml")
    for node in nodes:
        for key in ("registry", "metrics-db"):
            node["metadata"]["labels"].pop(key, None)
        fake.add(node)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local"}},
        "children": {"aios_workers": {"hosts": {
            f"aios-worker-{i}": {"aios_node_labels": {"registry": "yes", "metrics-db": "yes"}}
            for i in (1, 2, 3)}}}}}))
    try:
        done = playbook(fake, tmp_path, "site.yml", "--tags", "preflight,node_labels",
                        inventory=str(inventory))
        assert done.returncode == 0, done.stdout[-4000:]
        for i in (1, 2, 3):
            labels = fake.get("Node", f"aios-worker-{i}")["metadata"]["labels"]
            assert labels["registry"] == labels["metrics-db"] == "yes"
        assert "registry" not in fake.get("Node", "aios-cp-1")["metadata"]["labels"]
    finally:
        fake.stop()
