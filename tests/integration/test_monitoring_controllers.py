"""The controllers' ServiceMonitor on a real control plane: its reader token is made in a
real policy runtime (standing in for the clusters registry) and kept in a Secret, once;
without a registry to make it in, the controllers are left out, saying why; the uninstall
removes the ServiceMonitor and the Secret."""

from __future__ import annotations

import base64
import re

import httpx
from control_plane import ControlPlane
from test_monitoring import established, live_playbook, operator_crds
from test_monitoring_uninstall import monitors, uninstall

SECRET = "aios-controller-metrics-token"


def kept_token(kube: ControlPlane) -> str:
    secret = kube.get("Secret", SECRET, "controllers")
    assert secret is not None, "the controllers' metrics token Secret is missing"
    return base64.b64decode(secret["data"]["token"]).decode()


def test_controllers_are_scraped_with_a_reader_token_made_once(
    kube: ControlPlane, runtime: tuple[str, str], tmp_path,
) -> None:
    url, admin = runtime
    for crd in operator_crds().values():
        kube.add(crd)
        kube.wait_for(f"{crd['metadata']['name']} established",
                      lambda name=crd["metadata"]["name"]: established(kube, name))
    kube.ensure_namespace("controllers")  # a cluster's controller is installed
    kube.client.resources.invalidate_cache()

    # No registry to make the token in: the controllers are left out, and the run says so.
    done = live_playbook(kube, monitoring_controllers_api_url="")
    assert done.returncode == 0, done.stdout[-6000:]
    assert "The controllers in controllers are not scraped" in done.stdout
    assert monitors(kube, "controllers") == set()

    registry = {"monitoring_controllers_api_url": url, "monitoring_controllers_api_token": admin}
    done = live_playbook(kube, **registry)
    assert done.returncode == 0, done.stdout[-6000:]
    assert admin not in done.stdout
    assert monitors(kube, "controllers") == {"controllers"}
    token = kept_token(kube)
    assert token not in done.stdout, "the token is never logged"
    # A reader token of the registry: it reads /metrics and may change nothing.
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{url}/metrics", headers=headers, timeout=10).status_code == 200
    assert httpx.post(f"{url}/clusters", headers=headers, json={"id": "x"},
                      timeout=10).status_code == 403

    # Again: the token is kept, nothing changes.
    again = live_playbook(kube, **registry)
    assert again.returncode == 0, again.stdout[-4000:]
    assert re.search(r"localhost\s*:.*changed=0", again.stdout), again.stdout[-2000:]
    assert kept_token(kube) == token

    done = uninstall(kube, tmp_path)
    assert done.returncode == 0, done.stdout[-6000:]
    assert monitors(kube, "controllers") == set()
    assert kube.get("Secret", SECRET, "controllers") is None
