"""The roles in apply mode against a real Kubernetes control plane (tests/controlplane).

kube-apiserver, kube-controller-manager, kube-scheduler and etcd are built from the
pinned Kubernetes and etcd sources; kwok plays the nodes of the realistic node fixtures
of the unit tests, so pods are scheduled, go Ready (a Job's pods Succeeded) and
PersistentVolumeClaims are bound as on a cluster, with RBAC and admission on.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from control_plane import ControlPlane
from render_site import REPO, run_playbook

FIXTURES = REPO / "tests" / "unit" / "fixtures"
SEED_DEPLOYMENTS = {
    "blocks-db", "clusters-db", "policies-system", "vdag-db", "assets-db-registry",
    "adhoc-server-registry", "templates-registry", "spec-registry", "tasks-db",
    "containers-registry", "layers-registry", "splits-runners-registry", "components-registry",
    "networks-registry",  # not in the seed; upstream's installer deploys it
    "search-server", "resource-allocator", "vdag-processor", "failure-notifier", "metrics-redis",
    "global-block-metrics", "global-cluster-metrics", "global-vdag-metrics", "parser",
    "cluster-controller-gateway",
}
MANAGER = "aios.platform"


def daemonset(name: str) -> dict:
    """A node agent DaemonSet as a kubeadm cluster has it (kwok runs its pods)."""
    labels = {"k8s-app": name}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
            "spec": {"selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"tolerations": [{"operator": "Exists"}],
                         "containers": [{"name": name, "image": f"example.org/{name}:1"}]}}}}


def seed(kube: ControlPlane, *fixtures: str, cni: bool = True) -> ControlPlane:
    """Nodes and Services from the unit fixtures, and the node agents of a kubeadm cluster."""
    for name in fixtures:
        for item in yaml.safe_load((FIXTURES / name).read_text())["items"]:
            if item["kind"] == "Service" and kube.get("Service", item["metadata"]["name"],
                                                      item["metadata"]["namespace"]):
                continue
            kube.add(item)
    for name in (["calico-node"] if cni else []) + ["kube-proxy"]:
        kube.add(daemonset(name))
    return kube


def playbook(kube: ControlPlane, name: str = "site.yml", *args: str,
             inventory: str = "localhost,", kubeconfig: Path | None = None,
             **extra: object) -> subprocess.CompletedProcess:
    variables = {"aios_kubeconfig": str(kubeconfig or kube.kubeconfig), **extra}
    return run_playbook(name, variables, "-c", "local", *args, inventory=inventory)


def managers(obj: dict) -> set[tuple[str, str]]:
    return {(f["manager"], f["operation"]) for f in obj["metadata"].get("managedFields") or []}


@pytest.fixture(scope="module")
def installed(start_control_plane) -> tuple:
    kube = seed(start_control_plane(), "nodes_good.yml", "services_free.yml")
    first = playbook(kube)
    token = (kube.get("Secret", "aios-policy-runtime-token", "registries") or {}).get("data")
    second = playbook(kube)
    return kube, first, second, token


def test_install_applies_every_component(installed: tuple) -> None:
    kube, first, _, _ = installed
    assert first.returncode == 0, first.stdout[-6000:]
    assert kube.names("Deployment") == SEED_DEPLOYMENTS
    for name, namespace in (("registry", "registries"), ("metrics-db", "metrics-system")):
        statefulset = kube.get("StatefulSet", name, namespace)
        assert statefulset["spec"]["replicas"] == 3
        assert statefulset["status"]["readyReplicas"] == 3
    job = kube.get("Job", "registry-init-client", "registries")
    assert job["status"]["succeeded"] == 1
    assert "Preflight passed: 4 nodes checked" in first.stdout
    for deployment in kube.list("Deployment"):
        assert (MANAGER, "Apply") in managers(deployment)
        assert deployment["status"].get("readyReplicas") == deployment["spec"]["replicas"]


def test_second_run_changes_nothing(installed: tuple) -> None:
    _, _, second, _ = installed
    assert second.returncode == 0, second.stdout[-6000:]
    assert "changed=0" in second.stdout


def test_generated_token_is_kept(installed: tuple) -> None:
    import base64

    kube, first, _, token = installed
    value = base64.b64decode(token["token"]).decode()
    assert len(value) == 48
    assert kube.get("Secret", "aios-policy-runtime-token", "registries")["data"] == token
    assert value not in first.stdout, "the token must never be logged"


def test_upgrade_changes_what_cannot_change_in_place(installed: tuple) -> None:
    """Item 3: a new image, more replicas, another volume size and class on a real server."""
    kube, *_ = installed
    worker = next(n for n in yaml.safe_load((FIXTURES / "nodes_good.yml").read_text())["items"]
                  if n["metadata"]["name"] == "aios-worker-3")
    worker["metadata"]["name"] = worker["metadata"]["labels"]["kubernetes.io/hostname"] = \
        "aios-worker-4"
    kube.add(worker)
    before = kube.get("Job", "registry-init-client", "registries")["metadata"]["uid"]
    upgrade = {"registry_db_replicas": 4, "registry_db_image": "docker.io/library/mongo:7.0.16",
               "registry_db_volume_size": "20Gi", "registry_db_storage_class": "kwok-volume"}
    done = playbook(kube, "site.yml", "--tags", "registry_db", **upgrade)
    assert done.returncode == 0, done.stdout[-6000:]
    assert "StatefulSet/registry is replaced: its volume claims changed" in done.stdout
    assert "Job/registry-init-client is replaced: its spec changed" in done.stdout
    statefulset = kube.get("StatefulSet", "registry", "registries")
    assert statefulset["status"]["readyReplicas"] == 4
    claim = statefulset["spec"]["volumeClaimTemplates"][0]["spec"]
    assert (claim["resources"]["requests"]["storage"], claim["storageClassName"]) == (
        "20Gi", "kwok-volume")
    assert statefulset["spec"]["template"]["spec"]["containers"][0]["image"].endswith("7.0.16")
    job = kube.get("Job", "registry-init-client", "registries")
    assert job["metadata"]["uid"] != before and job["status"]["succeeded"] == 1
    init = kube.get("ConfigMap", "registry-init", "registries")["data"]["init.js"]
    assert "registry-3.registries.svc.cluster.local:27017" in init and "rs.add(h)" in init
    again = playbook(kube, "site.yml", "--tags", "registry_db", **upgrade)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-6000:]


def test_uninstall_one_part_keeps_the_others(installed: tuple) -> None:
    kube, *_ = installed
    done = playbook(kube, "uninstall.yml", "--tags", "metrics")
    assert done.returncode == 0, done.stdout[-6000:]
    deployments = kube.names("Deployment")
    assert not deployments & {"metrics-redis", "global-block-metrics", "global-cluster-metrics",
                              "global-vdag-metrics"}
    assert {"blocks-db", "parser"} <= deployments
    assert kube.get("StatefulSet", "metrics-db", "metrics-system") is not None, "metrics_db stays"


def test_check_mode_on_an_empty_cluster_changes_nothing(kube: ControlPlane) -> None:
    """Item 1: a dry-run Namespace is never stored, so check mode must not need it."""
    seed(kube, "nodes_good.yml")
    namespaces = kube.names("Namespace")
    done = playbook(kube, "site.yml", "--check", aios_components=["services"])
    assert done.returncode == 0, done.stdout[-6000:]
    assert kube.names("Namespace") == namespaces
    assert not kube.list("Deployment")
    assert "changed=" in done.stdout and "changed=0" not in done.stdout


def test_preflight_reports_every_problem_at_once(kube: ControlPlane) -> None:
    seed(kube, "nodes_two_workers_6gb.yml", "services_taken.yml", cni=False)
    namespaces = kube.names("Namespace")
    done = playbook(kube)
    assert done.returncode != 0
    for problem in ("found 2 worker node(s)", "aios-worker-2 has 6.2 GB RAM",
                    "no CNI found", "NodePort 30100 (for registries/blocks-db-svc) is already "
                    "used by service monitoring/grafana"):
        assert problem in done.stdout, problem
    assert kube.names("Namespace") == namespaces and not kube.list("Deployment")
    lenient = playbook(kube, aios_preflight_strict=False, aios_components=[])
    assert lenient.returncode == 0 and "WARNING: preflight found" in lenient.stdout


def refuse_on_create(kube: ControlPlane, name: str, resource: str, expression: str,
                     message: str) -> None:
    """A ValidatingAdmissionPolicy that refuses creating the core `resource` it matches."""
    kube.add({"apiVersion": "admissionregistration.k8s.io/v1",
              "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
              "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [
                  {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                   "resources": [resource]}]},
                  "validations": [{"expression": expression, "message": message}]}})
    kube.add({"apiVersion": "admissionregistration.k8s.io/v1",
              "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
              "spec": {"policyName": name, "validationActions": ["Deny"]}})


def test_component_that_never_becomes_ready_is_named(kube: ControlPlane) -> None:
    """An admission policy refuses parser's pods: the failure names it and says why."""
    seed(kube, "nodes_good.yml")
    refuse_on_create(kube, "no-parser", "pods",
                     "object.metadata.?labels[?'app.kubernetes.io/name'].orValue('') != 'parser'",
                     "parser pods are refused here")
    done = playbook(kube, aios_components=["services"], aios_apply_timeout=10)
    assert done.returncode != 0
    assert "core_services: Deployment/parser did not become ready within 10 s" in done.stdout
    assert "parser pods are refused here" in done.stdout


def test_objects_the_api_server_refuses_are_each_named(kube: ControlPlane) -> None:
    """Objects are applied together: every one is tried, and each refusal names its object."""
    seed(kube, "nodes_good.yml")
    refuse_on_create(kube, "no-node-ports", "services",
                     "object.spec.?type.orValue('') != 'NodePort'",
                     "NodePort Services are refused here")
    done = playbook(kube, aios_components=["services"], aios_apply_timeout=30)
    assert done.returncode != 0
    refused = [s for s in ("parser", "cluster-controller-gateway")
               if f"Service/{s} could not be applied" in done.stdout]
    assert refused == ["parser", "cluster-controller-gateway"], done.stdout[-4000:]
    assert "NodePort Services are refused here" in done.stdout
    assert "core_services: Service/parser could not be applied" in done.stdout
    # The objects after a refused one were still applied.
    assert "parser" in kube.names("Deployment", "services")


def test_node_labels_come_from_the_inventory(kube: ControlPlane, tmp_path: Path) -> None:
    nodes = yaml.safe_load((FIXTURES / "nodes_good.yml").read_text())["items"]
    for node in nodes:
        for key in ("registry", "metrics-db"):
            node["metadata"]["labels"].pop(key, None)
        kube.add(node)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {
        "hosts": {"localhost": {"ansible_connection": "local"}},
        "children": {"aios_workers": {"hosts": {
            f"aios-worker-{i}": {"aios_node_labels": {"registry": "yes", "metrics-db": "yes"}}
            for i in (1, 2, 3)}}}}}))
    done = playbook(kube, "site.yml", "--tags", "node_labels", inventory=str(inventory))
    assert done.returncode == 0, done.stdout[-6000:]
    for i in (1, 2, 3):
        labels = kube.get("Node", f"aios-worker-{i}")["metadata"]["labels"]
        assert labels["registry"] == labels["metrics-db"] == "yes"
    assert "registry" not in kube.get("Node", "aios-cp-1")["metadata"]["labels"]


def test_failed_init_job_runs_again(kube: ControlPlane) -> None:
    """Item 4: a failed init Job is replaced, not waited on until the timeout."""
    seed(kube, "nodes_good.yml")
    kube.ensure_namespace("registries")
    kube.add({"apiVersion": "batch/v1", "kind": "Job",
              "metadata": {"name": "registry-init-client", "namespace": "registries"},
              "spec": {"activeDeadlineSeconds": 1, "backoffLimit": 0, "template": {"spec": {
                  "restartPolicy": "Never", "nodeSelector": {"no-such": "node"},
                  "containers": [{"name": "init", "image": "example.org/init:1"}]}}}})
    kube.wait_for("the Job to fail", lambda: any(
        c["type"] == "Failed" and c["status"] == "True"
        for c in kube.get("Job", "registry-init-client", "registries")["status"].get(
            "conditions") or []))
    done = playbook(kube, "site.yml", "--tags", "registry_db", aios_apply_timeout=60)
    assert done.returncode == 0, done.stdout[-6000:]
    assert "Job/registry-init-client is replaced: it failed (DeadlineExceeded" in done.stdout
    assert kube.get("Job", "registry-init-client", "registries")["status"]["succeeded"] == 1


def test_tags_run_their_part(kube: ControlPlane) -> None:
    """Item 5: --tags registry_db installs the database; --tags preflight runs the checks."""
    seed(kube, "nodes_two_workers_6gb.yml", cni=False)
    preflight = playbook(kube, "site.yml", "--tags", "preflight")
    assert preflight.returncode != 0 and "no CNI found" in preflight.stdout
    kube.add(daemonset("calico-node"))
    database = playbook(kube, "site.yml", "--tags", "registry_db", registry_db_replicas=2)
    assert database.returncode == 0, database.stdout[-6000:]
    assert kube.get("StatefulSet", "registry", "registries")["status"]["readyReplicas"] == 2
    assert not kube.list("Deployment"), "only the tagged part"


def test_external_database_runtime_secret_gets_its_namespace(kube: ControlPlane) -> None:
    """Item 2: with an external registry database nothing else creates the namespace first."""
    seed(kube, "nodes_good.yml")
    done = playbook(kube, "site.yml", "--tags", "policy_runtime",
                    aios_registry_db_external_uri="mongodb://db.example:27017/?tls=true")
    assert done.returncode == 0, done.stdout[-6000:]
    assert kube.get("Secret", "aios-policy-runtime-token", "registries") is not None


def test_local_volume_mode_binds_data_and_backup(kube: ControlPlane) -> None:
    """Item 7: local volumes get their directories, and the backup claim is bound."""
    seed(kube, "nodes_good.yml")
    nodes = ["aios-worker-1", "aios-worker-2", "aios-worker-3"]
    done = playbook(kube, "site.yml", "--tags", "registry_db", registry_db_local_volumes=True,
                    registry_db_local_nodes=nodes, registry_db_backup_enabled=True)
    assert done.returncode == 0, done.stdout[-6000:]
    for node in nodes:
        job = kube.get("Job", f"registry-volume-{node}", "registries")
        assert job["status"]["succeeded"] == 1
        assert job["spec"]["template"]["spec"]["nodeName"] == node
    claims = {c["metadata"]["name"]: c for c in kube.list("PersistentVolumeClaim", "registries")}
    assert {name: c["status"]["phase"] for name, c in claims.items()} == {
        "data-registry-0": "Bound", "data-registry-1": "Bound", "data-registry-2": "Bound",
        "registry-backup": "Bound"}
    assert claims["registry-backup"]["spec"]["volumeName"] == "registry-backup"


def test_init_and_backup_pods_are_not_database_pods(installed: tuple) -> None:
    """Item 8: the StatefulSet's selector matches its own pods only."""
    kube, *_ = installed
    selector = kube.get("StatefulSet", "registry", "registries")["spec"]["selector"]
    pods = kube.list("Pod", "registries", label_selector=",".join(
        f"{k}={v}" for k, v in selector["matchLabels"].items()))
    assert pods and all(p["metadata"]["name"].startswith("registry-") and
                        "job-name" not in "".join(p["metadata"].get("labels", {}))
                        for p in pods)


def test_uninstall_leaves_no_pod_of_a_job(installed: tuple) -> None:
    """Item 9: batch/v1 orphans a Job's pods unless the delete says otherwise."""
    kube, *_ = installed
    assert kube.list("Pod", "registries", label_selector="batch.kubernetes.io/job-name")
    done = playbook(kube, "uninstall.yml", "--tags", "registry_db")
    assert done.returncode == 0, done.stdout[-6000:]
    assert kube.get("Job", "registry-init-client", "registries") is None
    assert not kube.list("Pod", "registries", label_selector="batch.kubernetes.io/job-name")
    assert not [p for p in kube.list("Pod", "registries")
                if p["metadata"]["name"].startswith("registry-")]
    assert kube.list("PersistentVolumeClaim", "registries"), "data stays without purge"
