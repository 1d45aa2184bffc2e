"""Least privilege, proved: the playbooks run as a ServiceAccount bound to docs/rbac-installer.yml.

The install, an upgrade that replaces what cannot change in place, and the uninstall with
purge run on a real control plane (RBAC on) as a ServiceAccount that has exactly the two
ClusterRoles docs/permissions.md lists, and nothing else.
"""

from __future__ import annotations

import yaml
from control_plane import ControlPlane
from render_site import REPO
from test_apply_mode import playbook, seed

ROLES = REPO / "docs" / "rbac-installer.yml"


def installer_kubeconfig(kube: ControlPlane) -> tuple:
    from kubernetes import client

    kube.ensure_namespace("aios-admin")
    kube.add({"apiVersion": "v1", "kind": "ServiceAccount",
              "metadata": {"name": "aios-installer", "namespace": "aios-admin"}})
    for role in yaml.safe_load(ROLES.read_text())["items"]:
        kube.add(role)
        kube.add({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                  "metadata": {"name": role["metadata"]["name"]},
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": role["metadata"]["name"]},
                  "subjects": [{"kind": "ServiceAccount", "name": "aios-installer",
                                "namespace": "aios-admin"}]})
    core = client.CoreV1Api(kube.client.client)
    token = core.create_namespaced_service_account_token(
        "aios-installer", "aios-admin",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 7200}}).status.token
    return kube.token_kubeconfig(kube.dir / "installer.kubeconfig", token), token


def test_install_upgrade_uninstall_as_the_documented_role(kube: ControlPlane) -> None:
    seed(kube, "nodes_good.yml")
    config, token = installer_kubeconfig(kube)
    as_installer = {"kubeconfig": config, "aios_components": ["registries", "metrics"],
                    "registry_db_backup_enabled": True}
    install = playbook(kube, **as_installer)
    assert install.returncode == 0, install.stdout[-6000:]
    assert token not in install.stdout
    upgrade = playbook(kube, registry_db_volume_size="20Gi", registry_db_image="mongo:7.0.15",
                       **as_installer)
    assert upgrade.returncode == 0, upgrade.stdout[-6000:]
    uninstall = playbook(kube, "uninstall.yml", aios_uninstall_purge_data=True, **as_installer)
    assert uninstall.returncode == 0, uninstall.stdout[-6000:]
    assert not kube.list("Deployment") and not kube.list("StatefulSet")
    assert "registries" not in kube.names("Namespace")
