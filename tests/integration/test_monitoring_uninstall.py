"""Uninstalling the monitoring on a real control plane: the role's uninstall tasks remove
its ServiceMonitors, PrometheusRule and dashboards, leave other parts' objects alone, and
(with aios_uninstall_purge_data) the namespace it made."""

from __future__ import annotations

import subprocess
from pathlib import Path

from control_plane import ControlPlane
from render_site import run_playbook
from test_monitoring import PUBLIC, established, live_playbook, operator_crds


def uninstall(kube: ControlPlane, folder: Path, **extra: object) -> subprocess.CompletedProcess:
    """playbooks/uninstall.yml with the tag monitoring, as an operator runs it."""
    variables = {"aios_kubeconfig": str(kube.kubeconfig), **PUBLIC, **extra}
    return run_playbook("uninstall.yml", variables, "-c", "local", "--tags", "monitoring")


def monitors(kube: ControlPlane, namespace: str) -> set[str]:
    found = kube.resource("ServiceMonitor", "monitoring.coreos.com/v1").get(namespace=namespace)
    return {m["metadata"]["name"] for m in found.to_dict()["items"]}


def test_uninstall_removes_the_monitoring_and_nothing_else(kube: ControlPlane,
                                                           tmp_path: Path) -> None:
    # Without the operator's CRDs there is nothing to remove, and that is not an error.
    done = uninstall(kube, tmp_path)
    assert done.returncode == 0, done.stdout[-4000:]

    for crd in operator_crds().values():
        kube.add(crd)
        kube.wait_for(f"{crd['metadata']['name']} established",
                      lambda name=crd["metadata"]["name"]: established(kube, name))
    kube.ensure_namespace("registries")
    installed = live_playbook(kube)
    assert installed.returncode == 0, installed.stdout[-6000:]
    kube.client.resources.invalidate_cache()
    assert monitors(kube, "registries") == {"policies-system", "clusters-db-service"}
    # Someone else's ServiceMonitor and ConfigMap in the same namespaces stay.
    foreign = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
               "metadata": {"name": "someone-else", "namespace": "registries",
                            "labels": {"app.kubernetes.io/component": "monitoring"}},
               "spec": {"selector": {"matchLabels": {"app": "x"}},
                        "endpoints": [{"port": "http"}]}}
    kube.add(foreign)
    kube.add({"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": "someone-elses-dashboard", "namespace": "monitoring",
                           "labels": {"grafana_dashboard": "1"}}, "data": {}})

    done = uninstall(kube, tmp_path)
    assert done.returncode == 0, done.stdout[-6000:]
    assert monitors(kube, "registries") == {"someone-else"}
    rules = kube.resource("PrometheusRule", "monitoring.coreos.com/v1").get(
        namespace="monitoring").to_dict()["items"]
    assert rules == []
    assert kube.names("ConfigMap", "monitoring") & {
        "aios-policy-runtime-dashboard", "aios-nunet-plugin-dashboard"} == set()
    assert "someone-elses-dashboard" in kube.names("ConfigMap", "monitoring")
    assert kube.get("Namespace", "monitoring") is not None, "data is kept without purge"

    # Again, with purge: the namespace AIOS made goes once nothing of AIOS is in it.
    kube.delete("ConfigMap", "someone-elses-dashboard", "monitoring")
    assert live_playbook(kube).returncode == 0
    done = uninstall(kube, tmp_path, aios_uninstall_purge_data=True)
    assert done.returncode == 0, done.stdout[-6000:]
    kube.wait_for("the monitoring namespace deleted",
                  lambda: kube.get("Namespace", "monitoring") is None)
