"""playbooks/addons.yml: the add-on table rendered strictly valid, and applied idempotently."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from control_plane import ControlPlane
from render_site import manifests, render_site
from test_apply_mode import playbook, seed
from test_render import (
    KUBERNETES_VERSIONS,
    assert_strictly_valid,
)
from test_render import (
    test_every_container_is_hardened as assert_hardened,
)

# The add-ons as documented in roles/cluster_addons/README.md: (service, port, NodePort).
ADDON_PORTS = {
    ("container-registry", 5000, 31500), ("assets-registry", 9000, 31510),
    ("assets-registry", 9001, None), ("inference-server", 8000, 31520),
    ("inference-server", 8001, None), ("inference-server", 8002, None),
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    directory = tmp_path_factory.mktemp("addons")
    done = render_site(directory, playbook="addons.yml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests(directory).values()}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_addon_manifest_is_strictly_valid(rendered: dict[str, dict], version: str) -> None:
    assert_strictly_valid(rendered, version)


def test_addons_table(rendered: dict[str, dict]) -> None:
    assert sorted(rendered) == sorted(
        [f"{kind}/{name}" for name in ("container-registry", "assets-registry", "inference-server")
         for kind in ("Deployment", "Service")]
        + [f"PersistentVolumeClaim/{name}-data"
           for name in ("container-registry", "assets-registry", "inference-server")]
        + ["Namespace/aios-addons", "Secret/assets-registry-credentials"])
    ports = {(m["metadata"]["name"], p["port"], p.get("nodePort"))
             for m in rendered.values() if m["kind"] == "Service" for p in m["spec"]["ports"]}
    assert ports == ADDON_PORTS
    assert_hardened({Path(k): m for k, m in rendered.items()})

    triton = rendered["Deployment/inference-server"]["spec"]
    pod = triton["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["volumes"] == [{"name": "data",
                               "persistentVolumeClaim": {"claimName": "inference-server-data"}}]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": "/models"}]
    assert pod["securityContext"]["fsGroup"] == 1000 and triton["strategy"] == {"type": "Recreate"}
    assert rendered["PersistentVolumeClaim/assets-registry-data"]["spec"]["resources"] == {
        "requests": {"storage": "100Gi"}}
    minio = rendered["Deployment/assets-registry"]["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in minio["env"]} == {
        "MINIO_ROOT_USER": "assets-registry-credentials",
        "MINIO_ROOT_PASSWORD": "assets-registry-credentials"}


def test_choosing_addons_and_a_given_password(tmp_path: Path) -> None:
    done = render_site(tmp_path, {"cluster_addons_enabled": ["assets-registry"],
                                  "cluster_addons_assets_password": "s3cret-pass"},
                       playbook="addons.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    assert "s3cret-pass" not in done.stdout
    kinds = sorted(f"{m['kind']}/{m['metadata']['name']}" for m in manifests(tmp_path).values())
    assert kinds == ["Deployment/assets-registry", "Namespace/aios-addons",
                     "PersistentVolumeClaim/assets-registry-data",
                     "Secret/assets-registry-credentials", "Service/assets-registry"]
    unknown = render_site(tmp_path, {"cluster_addons_enabled": ["jupyter"]}, playbook="addons.yml")
    assert unknown.returncode != 0 and "no row for: ['jupyter']" in unknown.stdout


def test_apply_generates_the_credentials_once(kube: ControlPlane) -> None:
    """The fixture's nodes have no GPU, so the inference server (which asks for one) is left
    out: on a real cluster it would stay Pending just the same."""
    seed(kube, "nodes_good.yml")
    chosen = {"cluster_addons_enabled": ["container-registry", "assets-registry"]}
    first = playbook(kube, "addons.yml", **chosen)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    secret = kube.get("Secret", "assets-registry-credentials", "aios-addons")
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert len(data["password"]) == 48 and data["user"] == "aios-assets"
    assert data["password"] not in first.stdout
    assert kube.get("Deployment", "assets-registry", "aios-addons") is not None
    again = playbook(kube, "addons.yml", **chosen)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]
    kept = kube.get("Secret", "assets-registry-credentials", "aios-addons")["data"]["password"]
    assert base64.b64decode(kept).decode() == data["password"]
