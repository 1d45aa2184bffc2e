"""playbooks/interlink.yml: the NuNet plugin and the interLink chart rendered strictly valid
and wired together, and installed through a real helm on a real control plane.

The chart is the stand-in of `stand_in_charts/interlink/` (see its README): the same values
interface as interLink's published chart, typed by its values.schema.json, so a value the
role generates wrongly fails helm here as it would fail the published chart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from control_plane import ControlPlane
from render_site import manifests, render_site
from test_apply_mode import FIXTURES, playbook, seed
from test_render import KUBERNETES_VERSIONS, assert_strictly_valid
from test_render import test_every_container_is_hardened as assert_hardened

CHART = Path(__file__).parent / "stand_in_charts" / "interlink"
SETTINGS = {"interlink_dms_url": "http://10.0.0.5:9999", "interlink_chart_ref": str(CHART)}


def render(directory: Path, **extra: object):
    return render_site(directory, {**SETTINGS, **extra}, playbook="interlink.yml")


def by_name(directory: Path, part: str) -> dict[str, dict]:
    return {f"{m['kind']}/{m['metadata']['name']}": m
            for path, m in manifests(directory / part).items()}


def container(deployment: dict, name: str) -> dict:
    pod = deployment["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == name)


def env_of(item: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in item.get("env", [])}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("interlink")
    done = render(directory)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return directory


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_strictly_valid(rendered: Path, version: str) -> None:
    named = {f"{p.parent.name}/{p.name}": m for p, m in manifests(rendered).items()
             if p.parent.name in ("interlink", "interlink_chart")}
    assert len(named) >= 8
    assert_strictly_valid(named, version)


def test_the_plugin_keeps_its_mapping_and_wants_its_token(rendered: Path) -> None:
    plugin = by_name(rendered, "interlink")
    # the token Secret is generated once into the render directory (mode 0600)
    assert sorted(plugin) == ["Deployment/nunet-plugin", "Namespace/interlink",
                              "PersistentVolumeClaim/nunet-plugin-data",
                              "Secret/nunet-plugin-token", "Service/nunet-plugin"]
    assert_hardened({Path(k): m for k, m in plugin.items()})
    deployment = plugin["Deployment/nunet-plugin"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "one pod on the RWO claim"
    main = container(deployment, "nunet-plugin")
    assert main["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    env = env_of(main)
    assert env["NUNET_PLUGIN_STORE_PATH"].startswith("/data/")
    assert env["NUNET_PLUGIN_DMS_URL"] == "http://10.0.0.5:9999"
    assert json.loads(env["NUNET_PLUGIN_NODE_TAINTS"]) == [
        {"key": "virtual-node.interlink/no-schedule", "value": "true", "effect": "NoSchedule"}]
    assert env["NUNET_PLUGIN_API_TOKEN"] == {"secretKeyRef": {"name": "nunet-plugin-token",
                                                              "key": "token"}}
    assert "NUNET_PLUGIN_DMS_TOKEN" not in env and "NUNET_PLUGIN_INSECURE_NO_AUTH" not in env
    assert main["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": 4000}


def test_interlink_reaches_the_plugin_through_the_forwarder(rendered: Path) -> None:
    """The wiring across the two parts: socket, Service address, token, taint, node name."""
    plugin, chart = by_name(rendered, "interlink"), by_name(rendered, "interlink_chart")
    pod = chart["Deployment/nunet-node-node"]
    forwarder = container(pod, "plugin")
    plugin_container = container(plugin["Deployment/nunet-plugin"], "nunet-plugin")
    assert forwarder["image"] == plugin_container["image"]
    assert forwarder["command"] == ["aios-nunet-forward"]
    env = env_of(forwarder)
    service = plugin["Service/nunet-plugin"]
    port = service["spec"]["ports"][0]["port"]
    assert env["NUNET_FORWARD_UPSTREAM"] == (
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port}")
    assert env["NUNET_FORWARD_API_TOKEN"] == env_of(plugin_container)["NUNET_PLUGIN_API_TOKEN"]
    interlink_config = yaml.safe_load(
        chart["ConfigMap/nunet-node-interlink-config"]["data"]["InterLinkConfig.yaml"])
    assert interlink_config["SidecarURL"] == "unix://" + env["NUNET_FORWARD_SOCKET"]
    socket_dir = str(Path(env["NUNET_FORWARD_SOCKET"]).parent)
    for name in ("plugin", "interlink"):
        mounts = {m["name"]: m["mountPath"].rstrip("/")
                  for m in container(pod, name)["volumeMounts"]}
        assert mounts["sockets"] == socket_dir, name
    assert {"name": "sockets", "emptyDir": {}} in pod["spec"]["template"]["spec"]["volumes"]

    node_config = yaml.safe_load(
        chart["ConfigMap/nunet-node-virtual-kubelet-config"]["data"]["InterLinkConfig.yaml"])
    assert node_config["NodeTaints"] == [{"Key": "virtual-node.interlink/no-schedule",
                                          "Value": "true", "Effect": "NoSchedule"}]
    assert node_config["NodeLabels"] == ["aios.network/compute=nunet"]
    assert node_config["Resources"]["Pods"] == "110"
    assert env_of(container(pod, "vk"))["NODENAME"] == "nunet-node"


def test_the_release_is_written_for_helm_by_hand(rendered: Path) -> None:
    release = yaml.safe_load((rendered / "helm" / "nunet-node" / "release.yaml").read_text())
    assert release["chart"] == str(CHART) and release["version"] == "0.6.1"
    assert release["command"].startswith("helm upgrade --install nunet-node ")
    values = yaml.safe_load((rendered / "helm" / "nunet-node" / "values.yaml").read_text())
    assert values["plugin"]["enabled"] is True and values["nodeName"] == "nunet-node"
    token = next(e for e in values["plugin"]["envs"] if e["name"] == "NUNET_FORWARD_API_TOKEN")
    assert token == {"name": "NUNET_FORWARD_API_TOKEN", "valueFrom": {"secretKeyRef": {
        "name": "nunet-plugin-token", "key": "token"}}}, "a reference, never the value"


def test_options_reach_the_manifests(tmp_path: Path) -> None:
    done = render(tmp_path, interlink_node_name="gpu-cloud", interlink_dms_token="dms-s3cret",
                  interlink_plugin_token="plugin-s3cret", interlink_gpu_only=True,
                  interlink_plugin_storage_class="fast",
                  interlink_chart_values={"virtualNode": {"resources": {"CPUs": 4}}})
    assert done.returncode == 0, done.stdout[-3000:]
    assert "s3cret" not in done.stdout
    plugin, chart = by_name(tmp_path, "interlink"), by_name(tmp_path, "interlink_chart")
    assert plugin["Secret/nunet-dms-token"]["stringData"] == {"token": "dms-s3cret"}
    assert plugin["Secret/nunet-plugin-token"]["stringData"] == {"token": "plugin-s3cret"}
    env = env_of(container(plugin["Deployment/nunet-plugin"], "nunet-plugin"))
    assert env["NUNET_PLUGIN_DMS_TOKEN"] == {"secretKeyRef": {"name": "nunet-dms-token",
                                                              "key": "token"}}
    assert env["NUNET_PLUGIN_GPU_ONLY"] == "true"
    assert plugin["PersistentVolumeClaim/nunet-plugin-data"]["spec"]["storageClassName"] == "fast"
    node_config = yaml.safe_load(
        chart["ConfigMap/gpu-cloud-virtual-kubelet-config"]["data"]["InterLinkConfig.yaml"])
    assert node_config["Resources"]["CPU"] == "4", "chart values merge over the role's"
    assert node_config["Resources"]["Pods"] == "110", "and keep the role's others"
    for version in KUBERNETES_VERSIONS:
        assert_strictly_valid({**plugin, **chart}, version)


@pytest.mark.parametrize(("extra", "message"), [
    ({"interlink_dms_url": ""}, "Set interlink_dms_url to the service-provider DMS"),
    ({"interlink_node_name": "NuNet_Node"}, "must be DNS-1123 labels"),
    ({"interlink_node_taints": [{"key": "k", "effect": "Never"}]}, "needs a key and an effect"),
    ({"interlink_helm_binary": "/nowhere/helm"}, "install helm 3.8 or later"),
    ({"interlink_virtual_kubelet_image": "example.org/virtual-kubelet-inttw:0.6.0"},
     "virtual-kubelet-inttw:0.6.0 is older than interLink 0.6.2"),
    ({"interlink_chart_ref": "/nowhere/chart"}, "offline, point interlink_chart_ref at a copy"),
])
def test_bad_settings_are_named(tmp_path: Path, extra: dict, message: str) -> None:
    done = render(tmp_path, **extra)
    assert done.returncode != 0 and message in done.stdout, done.stdout[-3000:]


@pytest.mark.parametrize(("values", "field"), [
    ({"virtualNode": {"resources": {"pods": "many"}}}, "virtualNode.resources.pods"),
    ({"virtualNode": {"nodeTaints": [{"key": "k", "effect": "Sometimes"}]}},
     "virtualNode.nodeTaints.0.effect"),
    ({"plugin": {"socket": "/var/run/p.sock"}}, "plugin.socket"),
])
def test_values_outside_the_charts_interface_are_refused(tmp_path: Path, values: dict,
                                                         field: str) -> None:
    """The values the role hands to the chart keep to the types the chart takes."""
    done = render(tmp_path, interlink_chart_values=values)
    assert done.returncode != 0, done.stdout[-3000:]
    assert "Could not render or validate the interLink chart" in done.stdout
    assert field in done.stdout, done.stdout[-3000:]


def test_without_helm_render_mode_can_write_only_the_values(tmp_path: Path) -> None:
    done = render(tmp_path, interlink_helm_binary="/nowhere/helm", interlink_render_chart=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert (tmp_path / "helm" / "nunet-node" / "values.yaml").exists()
    assert not (tmp_path / "interlink_chart").exists()


def virtual_node(kube: ControlPlane, ready: str | None = "True") -> None:
    """The virtual node of the fixture; kwok keeps it Ready, or it is left as ``ready``.

    The cluster's own nodes (kwok's) run the plugin and interLink's pods."""
    seed(kube, "nodes_good.yml")
    node = yaml.safe_load((FIXTURES / "node_virtual_nunet.yml").read_text())["items"][0]
    if ready == "True":
        kube.add(node)
    elif ready is not None:
        node["status"]["conditions"] = [{"type": "Ready", "status": ready, "reason": "Test",
                                         "message": "not ready"}]
        kube.add(node, kwok=False)


def secret_value(kube: ControlPlane, name: str) -> str:
    import base64

    return base64.b64decode(kube.get("Secret", name, "interlink")["data"]["token"]).decode()


def test_apply_installs_with_helm_and_waits_for_the_node(kube: ControlPlane) -> None:
    virtual_node(kube)
    first = playbook(kube, "interlink.yml", **SETTINGS)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    token = secret_value(kube, "nunet-plugin-token")
    assert len(token) == 48 and token not in first.stdout
    plugin = kube.get("Deployment", "nunet-plugin", "interlink")
    assert plugin["status"]["readyReplicas"] == 1
    release = kube.get("Secret", "sh.helm.release.v1.nunet-node.v1", "interlink")
    assert release["metadata"]["labels"]["status"] == "deployed"
    forwarder = container(kube.get("Deployment", "nunet-node-node", "interlink"), "plugin")
    assert env_of(forwarder)["NUNET_FORWARD_UPSTREAM"] == "http://nunet-plugin.interlink.svc:4000"
    assert "Virtual node nunet-node is Ready" in first.stdout
    assert "nunet.io/gpu.nvidia.rtx.3090.24gb" in first.stdout

    again = playbook(kube, "interlink.yml", **SETTINGS)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-4000:]
    assert secret_value(kube, "nunet-plugin-token") == token
    assert kube.get("Secret", "sh.helm.release.v1.nunet-node.v2", "interlink") is None


@pytest.mark.parametrize(("node_ready", "message"), [
    (None, "The virtual node nunet-node did not register within 3 s"),
    ("False", "The virtual node nunet-node is not Ready within 3 s"),
])
def test_a_node_that_is_not_ready_fails_naming_where_to_look(kube: ControlPlane, node_ready,
                                                             message: str) -> None:
    virtual_node(kube, node_ready)
    done = playbook(kube, "interlink.yml", **SETTINGS, interlink_wait_timeout=3)
    assert done.returncode != 0
    assert message in done.stdout, done.stdout[-3000:]
    assert "logs deploy/nunet-node-node -c vk" in done.stdout


def test_check_mode_changes_nothing(kube: ControlPlane) -> None:
    virtual_node(kube)
    namespaces = kube.names("Namespace")
    done = playbook(kube, "interlink.yml", "--check", **SETTINGS)
    assert done.returncode == 0, done.stdout[-4000:]
    assert kube.names("Namespace") == namespaces and not kube.list("Deployment")


def test_uninstall_removes_the_release_and_keeps_the_mapping(kube: ControlPlane) -> None:
    virtual_node(kube)
    installed = playbook(kube, "interlink.yml", **SETTINGS)
    assert installed.returncode == 0, installed.stdout[-4000:]
    done = playbook(kube, "uninstall.yml", "--tags", "interlink")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert kube.get("Deployment", "nunet-node-node", "interlink") is None
    assert kube.get("Deployment", "nunet-plugin", "interlink") is None
    assert kube.get("Secret", "sh.helm.release.v1.nunet-node.v1", "interlink") is None
    assert kube.get("PersistentVolumeClaim", "nunet-plugin-data", "interlink") is not None
    assert not kube.list("Pod", "interlink"), "no pod is left behind"
