"""Render mode's output applied as a GitOps user applies it, to a real control plane.

playbooks/site.yml and playbooks/interlink.yml render into a directory (and site.yml once
more with both databases on local volumes with backups, in namespaces of their own); kubectl
applies it server side, folder by folder in the playbook's order (Namespaces and CRDs of a
folder first), to the control plane of tests/controlplane: kube-apiserver with its default
admission plugins, controllers, scheduler, the default StorageClass, and kwok nodes labelled
as the example inventory's ``aios_node_labels`` label them (the node_labels role's
convention). Everything is then read back from the API server. A second render, into
another directory that holds only the Secrets the first one generated, is byte-for-byte
the same, and applying it changes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from control_plane import ControlPlane, bin_dir
from render_site import REPO, manifests, run_playbook


def find_kubectl() -> str | None:
    """kubectl built beside the control plane when there is one, otherwise the one on PATH."""
    with contextlib.suppress(RuntimeError):
        built = bin_dir(build=False) / "kubectl"
        if built.is_file():
            return str(built)
    return shutil.which("kubectl")


KUBECTL = find_kubectl()
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")

PUBLIC = {"aios_public_address": "203.0.113.10"}
# Applied before the rest of a folder: what the rest lives in or is an instance of.
FIRST = ("Namespace", "CustomResourceDefinition")
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
MANAGER = "gitops"
NODES = REPO / "tests" / "unit" / "fixtures" / "nodes_good.yml"
INVENTORY = REPO / "inventories" / "example"


# --- rendering -----------------------------------------------------------------------------


def inventory_labels() -> dict[str, dict[str, str]]:
    """Node name -> the labels node_labels puts on it, from the example inventory."""
    hosts = yaml.safe_load((INVENTORY / "hosts.yml").read_text())
    defaults = yaml.safe_load(
        (REPO / "roles" / "node_labels" / "defaults" / "main.yml").read_text()
    )
    group = hosts["all"]["children"][defaults["node_labels_group"]]["hosts"]
    labels = {}
    for host in group:
        host_vars = yaml.safe_load((INVENTORY / "host_vars" / f"{host}.yml").read_text())
        labels[host_vars.get("aios_node_name", host)] = host_vars.get("aios_node_labels", {})
    return labels


def database_nodes(role: str) -> list[str]:
    """The nodes the inventory labels for the database of ``role`` (registry_db, metrics_db)."""
    defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
    label = (defaults[f"{role}_node_label_key"], defaults[f"{role}_node_label_value"])
    return sorted(node for node, labels in inventory_labels().items() if label in labels.items())


# Both databases on local volumes with backups, each in a namespace of its own so that they
# run beside the default install.
LOCAL_NAMESPACES = {"registry_db": "registries-local", "metrics_db": "metrics-local"}


def renders_of() -> list[tuple[str, str, dict, list[str]]]:
    """(folder, playbook, variables, arguments) of each render: the management cluster, the
    NuNet plugin, and the databases on local volumes."""
    local = {
        f"{role}_{name}": value
        for role, namespace in LOCAL_NAMESPACES.items()
        for name, value in (
            ("namespace", namespace),
            ("local_volumes", True),
            ("local_nodes", database_nodes(role)),
            ("backup_enabled", True),
        )
    }
    # Without the monitoring part: its ServiceMonitors and PrometheusRule need the
    # prometheus-operator's CRDs, which test_monitoring.py installs and applies them with.
    site = {**PUBLIC, "aios_monitoring": False}
    return [
        ("site", "site.yml", site, []),
        (
            "interlink",
            "interlink.yml",
            {"interlink_dms_url": "http://dms.example:9999", "interlink_render_chart": False},
            [],
        ),
        (
            "local",
            "site.yml",
            {**site, **local},
            ["--tags", ",".join(LOCAL_NAMESPACES)],
        ),
    ]


def playbook_roles(playbook: str) -> list[str]:
    """The roles of a playbook in the order it runs them: the folders of its render."""
    plays = yaml.safe_load((REPO / "playbooks" / playbook).read_text())
    return [role["role"].rsplit(".", 1)[-1] for play in plays for role in play.get("roles", [])]


def render_all(root: Path) -> list[Path]:
    """Render everything under ``root``; the folders of manifests in apply order."""
    folders = []
    for name, playbook, variables, arguments in renders_of():
        directory = root / name
        variables = {"aios_render_dir": str(directory), "ansible_connection": "local", **variables}
        done = run_playbook(playbook, variables, *arguments, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        written = {
            p.parent
            for p in directory.rglob("*.yaml")
            if yaml.safe_load(p.read_text()).get("apiVersion")
        }
        ordered = [
            directory / role for role in playbook_roles(playbook) if directory / role in written
        ]
        assert set(ordered) == written, f"{playbook}: folders no role of it writes"
        folders.extend(ordered)
    return folders


def files(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass
class Renders:
    first_root: Path
    second_root: Path
    first: list[Path]
    pending: Future

    @property
    def second(self) -> list[Path]:
        return self.pending.result()


@pytest.fixture(scope="module")
def renders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Renders]:
    """Two renders: the second into a directory holding only the first one's Secrets, made
    while the control plane starts and the first is applied."""
    first_root = tmp_path_factory.mktemp("render-1")
    first = render_all(first_root)
    second_root = tmp_path_factory.mktemp("render-2")
    for secret in first_root.rglob("secret-*.yaml"):
        target = second_root / secret.relative_to(first_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(secret, target)
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield Renders(first_root, second_root, first, pool.submit(render_all, second_root))


def objects(folder: Path) -> list[dict]:
    return [m for m in manifests(folder).values() if m.get("apiVersion")]


# --- the control plane ---------------------------------------------------------------------


def kwok_nodes() -> list[dict]:
    """The fixture's nodes, with the labels the inventory gives and no others of its kind."""
    wanted = inventory_labels()
    keys = {key for labels in wanted.values() for key in labels}
    nodes = []
    for node in yaml.safe_load(NODES.read_text())["items"]:
        if node["kind"] != "Node":
            continue
        labels = node["metadata"]["labels"]
        for key in keys:
            labels.pop(key, None)
        labels.update(wanted.get(node["metadata"]["name"], {}))
        nodes.append(node)
    assert {n["metadata"]["name"] for n in nodes} >= set(wanted)
    return nodes


def kubectl(kube: ControlPlane, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(KUBECTL), f"--kubeconfig={kube.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def apply(kube: ControlPlane, folders: list[Path]) -> list[str]:
    """kubectl apply --server-side of each folder in turn, Namespaces and CRDs first;
    the API server must neither refuse nor warn."""
    output = []
    for folder in folders:
        first = [str(p) for p, m in manifests(folder).items() if m.get("kind") in FIRST]
        for paths in ([first] if first else []) + [[str(folder)]]:
            done = kubectl(
                kube,
                "apply",
                "--server-side",
                "--validate=strict",
                f"--field-manager={MANAGER}",
                *(arg for path in paths for arg in ("-f", path)),
            )
            assert done.returncode == 0, f"{folder.name}: {done.stderr}"
            # The API server warns of what it accepts but ignores or deprecates.
            assert not done.stderr.strip(), f"{folder.name}: {done.stderr}"
            output.extend(done.stdout.splitlines())
    return output


def live(kube: ControlPlane, manifest: dict) -> dict | None:
    from kubernetes.dynamic.exceptions import NotFoundError

    resource = kube.resource(manifest["kind"], manifest["apiVersion"])
    try:
        return resource.get(
            name=manifest["metadata"]["name"], namespace=manifest["metadata"].get("namespace")
        ).to_dict()
    except NotFoundError:
        return None


def settled(kube: ControlPlane, rendered: list[dict]) -> bool:
    """Every workload ready (a Job succeeded) and every claim bound; a missing object is
    left to the tests to name."""
    for manifest in rendered:
        obj = live(kube, manifest) if manifest["kind"] in WORKLOADS else None
        if obj is None:
            continue
        status = obj.get("status") or {}
        kind = manifest["kind"]
        if kind in ("Deployment", "StatefulSet"):
            if (
                status.get("observedGeneration") != obj["metadata"]["generation"]
                or status.get("readyReplicas", 0) != obj["spec"]["replicas"]
                or status.get("updatedReplicas", 0) != obj["spec"]["replicas"]
            ):
                return False
        elif kind == "Job" and not status.get("succeeded"):
            return False
    claims = kube.list("PersistentVolumeClaim")
    return all(c.get("status", {}).get("phase") == "Bound" for c in claims)


@pytest.fixture(scope="module")
def installed(
    start_control_plane, renders: Renders
) -> Iterator[tuple[ControlPlane, list[dict], list]]:
    """The first render applied and settled: (control plane, manifests, kubectl output)."""
    kube = start_control_plane()
    for node in kwok_nodes():
        kube.add(node)
    folders = renders.first
    output = apply(kube, folders)
    rendered = [m for folder in folders for m in objects(folder)]
    kube.wait_for(
        "every workload ready and every claim bound", lambda: settled(kube, rendered), timeout=180
    )
    yield kube, rendered, output
    kube.stop()


def pod_template(obj: dict) -> dict | None:
    spec = obj.get("spec") or {}
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]
    return spec.get("template") if obj["kind"] in WORKLOADS else None


def workloads(kube: ControlPlane, rendered: list[dict]) -> list[dict]:
    return [live(kube, m) for m in rendered if m["kind"] in WORKLOADS]


def owned_pods(kube: ControlPlane, workload: dict) -> list[dict]:
    """The pods of a Deployment, StatefulSet, DaemonSet or Job, read back by their selector
    (a CronJob has none until its schedule comes)."""
    namespace = workload["metadata"]["namespace"]
    if workload["kind"] == "CronJob":
        return []
    if workload["kind"] == "Job":
        selector = {"batch.kubernetes.io/job-name": workload["metadata"]["name"]}
    else:
        selector = workload["spec"]["selector"]["matchLabels"]
    return kube.list(
        "Pod", namespace, label_selector=",".join(f"{k}={v}" for k, v in selector.items())
    )


# --- the tests -----------------------------------------------------------------------------


def test_every_rendered_object_is_on_the_server_as_rendered(installed) -> None:
    kube, rendered, output = installed
    assert len(rendered) > 60
    assert not [line for line in output if "serverside-applied" not in line], output
    missing, changed = [], []
    for manifest in rendered:
        where = (
            f"{manifest['kind']} {manifest['metadata'].get('namespace')}/"
            f"{manifest['metadata']['name']}"
        )
        obj = live(kube, manifest)
        if obj is None:
            missing.append(where)
            continue
        expected = copy.deepcopy(manifest)
        if expected["kind"] == "Secret":
            expected.setdefault("data", {}).update(
                {
                    k: base64.b64encode(v.encode()).decode()
                    for k, v in expected.pop("stringData", {}).items()
                }
            )
        changed.extend(f"{where}: {field}" for field in differences(expected, obj))
    assert not missing, missing
    # What the server stores differently from what was rendered shows as drift in GitOps tools.
    assert not changed, changed


def differences(expected, actual, path: str = "") -> list[str]:
    """Where ``actual`` does not hold ``expected`` (an empty string as an absent field)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [path]
        return [
            d
            for key, value in expected.items()
            for d in differences(value, actual.get(key), f"{path}.{key}")
            if not (value in ("", [], {}) and actual.get(key) is None)
        ]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [path]
        return [
            d
            for i, (e, a) in enumerate(zip(expected, actual, strict=True))
            for d in differences(e, a, f"{path}[{i}]")
        ]
    return [] if expected == actual else [f"{path}: {expected!r} became {actual!r}"]


def test_what_every_pod_template_references_exists(installed) -> None:
    kube, rendered, _ = installed
    missing, checked = [], 0

    def need(
        kind: str, namespace: str, name: str, key: str | None = None, optional: bool = False
    ) -> None:
        nonlocal checked
        checked += 1
        found = kube.get(kind, name, namespace)
        if found is None:
            if not optional:
                missing.append(f"{kind} {namespace}/{name}")
        elif key is not None and key not in {
            **(found.get("data") or {}),
            **(found.get("binaryData") or {}),
        }:
            missing.append(f"{kind} {namespace}/{name} key {key}")

    for workload in workloads(kube, rendered):
        namespace = workload["metadata"]["namespace"]
        pod = pod_template(workload)["spec"]
        templates = {
            t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])
        }
        for template in templates:
            for ordinal in range(workload["spec"]["replicas"]):
                need(
                    "PersistentVolumeClaim",
                    namespace,
                    f"{template}-{workload['metadata']['name']}-{ordinal}",
                )
        need("ServiceAccount", namespace, pod.get("serviceAccountName") or "default")
        for secret in pod.get("imagePullSecrets", []):
            need("Secret", namespace, secret["name"])
        for volume in pod.get("volumes", []):
            sources = [volume, *volume.get("projected", {}).get("sources", [])]
            for source in sources:
                if "secret" in source:
                    ref = source["secret"]
                    need(
                        "Secret",
                        namespace,
                        ref.get("secretName") or ref.get("name"),
                        optional=ref.get("optional", False),
                    )
                if "configMap" in source:
                    need(
                        "ConfigMap",
                        namespace,
                        source["configMap"]["name"],
                        optional=source["configMap"].get("optional", False),
                    )
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                if claim not in templates:
                    need("PersistentVolumeClaim", namespace, claim)
        for container in pod.get("initContainers", []) + pod["containers"]:
            for variable in container.get("env", []):
                for kind, ref in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    source = variable.get("valueFrom", {}).get(ref)
                    if source:
                        need(
                            kind,
                            namespace,
                            source["name"],
                            source["key"],
                            source.get("optional", False),
                        )
            for source in container.get("envFrom", []):
                for kind, ref in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    if ref in source:
                        need(
                            kind,
                            namespace,
                            source[ref]["name"],
                            optional=source[ref].get("optional", False),
                        )
    assert checked > 40
    assert not missing, missing


def test_every_service_reaches_ready_pods_on_its_target_ports(installed) -> None:
    kube, rendered, _ = installed
    problems = []
    ours = {
        (p["metadata"]["namespace"], p["metadata"]["name"])
        for w in workloads(kube, rendered)
        for p in owned_pods(kube, w)
    }
    services = [live(kube, m) for m in rendered if m["kind"] == "Service"]
    for service in services:
        namespace, name = service["metadata"]["namespace"], service["metadata"]["name"]
        selector = service["spec"].get("selector")
        if not selector:
            continue
        pods = kube.list(
            "Pod", namespace, label_selector=",".join(f"{k}={v}" for k, v in selector.items())
        )
        pods = [p for p in pods if (namespace, p["metadata"]["name"]) in ours]
        if not pods:
            problems.append(f"Service {namespace}/{name} selects no pod of the render")
            continue
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for pod in pods:
                declared = [
                    (p.get("name"), p["containerPort"])
                    for c in pod["spec"]["containers"]
                    for p in c.get("ports", [])
                ]
                if not any(target in pair for pair in declared):
                    problems.append(
                        f"Service {namespace}/{name} port {port['port']}: "
                        f"{pod['metadata']['name']} has no port {target}"
                    )
    assert not problems, problems

    def endpoints_ready() -> bool:
        slices = kube.list("EndpointSlice")
        ready = {
            (s["metadata"]["namespace"], s["metadata"]["labels"]["kubernetes.io/service-name"])
            for s in slices
            for e in s.get("endpoints") or []
            if (e.get("conditions") or {}).get("ready")
        }
        return all(
            (s["metadata"]["namespace"], s["metadata"]["name"]) in ready
            for s in services
            if s["spec"].get("selector")
        )

    kube.wait_for("a ready endpoint behind every Service", endpoints_ready, timeout=60)


def test_workloads_are_admitted_and_ready(installed) -> None:
    kube, rendered, _ = installed
    found = workloads(kube, rendered)
    assert {w["kind"] for w in found} >= {"Deployment", "StatefulSet", "Job", "CronJob"}
    for workload in found:
        where = (
            f"{workload['kind']} {workload['metadata']['namespace']}/{workload['metadata']['name']}"
        )
        pods = owned_pods(kube, workload)
        if workload["kind"] == "CronJob":
            assert not workload["spec"].get("suspend"), where
        elif workload["kind"] == "Job":
            assert workload["status"].get("succeeded") == 1, where
            assert any(p["status"]["phase"] == "Succeeded" for p in pods), where
        else:
            replicas = workload["spec"]["replicas"]
            assert workload["status"].get("readyReplicas") == replicas, where
            running = [p for p in pods if p["status"]["phase"] == "Running"]
            assert len(running) == replicas, where
    # The PodSecurity admission plugin would admit every pod at the restricted level, but
    # for those that prepare a node's local volume directory (hostPath, as root).
    host_path = {
        w["metadata"]["namespace"]
        for w in found
        if any("hostPath" in v for v in pod_template(w)["spec"].get("volumes", []))
    }
    assert host_path == set(LOCAL_NAMESPACES.values())
    namespaces = sorted(
        {m["metadata"]["name"] for m in rendered if m["kind"] == "Namespace"} - host_path
    )
    for namespace in namespaces:
        done = kubectl(
            kube,
            "label",
            "--dry-run=server",
            "--overwrite",
            "namespace",
            namespace,
            "pod-security.kubernetes.io/enforce=restricted",
        )
        assert done.returncode == 0, done.stderr
        assert "violate" not in done.stderr, f"{namespace}: {done.stderr}"


def test_claims_bind_with_their_class_or_the_default_one(installed) -> None:
    kube, rendered, _ = installed
    default = next(
        c["metadata"]["name"]
        for c in kube.list("StorageClass")
        if (c["metadata"].get("annotations") or {}).get(
            "storageclass.kubernetes.io/is-default-class"
        )
        == "true"
    )
    # The class each claim is rendered with: its own, its StatefulSet's template's.
    classes = {}
    for manifest in rendered:
        namespace = manifest["metadata"].get("namespace")
        if manifest["kind"] == "PersistentVolumeClaim":
            classes[namespace, manifest["metadata"]["name"]] = manifest["spec"].get(
                "storageClassName"
            )
        for template in manifest.get("spec", {}).get("volumeClaimTemplates", []):
            for ordinal in range(manifest["spec"]["replicas"]):
                name = f"{template['metadata']['name']}-{manifest['metadata']['name']}-{ordinal}"
                classes[namespace, name] = template["spec"].get("storageClassName")
    namespaces = {m["metadata"]["name"] for m in rendered if m["kind"] == "Namespace"}
    claims = {
        (ns, c["metadata"]["name"]): c
        for ns in namespaces
        for c in kube.list("PersistentVolumeClaim", ns)
    }
    assert set(claims) == set(classes)
    assert None in classes.values() and set(classes.values()) - {None}
    for where, claim in claims.items():
        assert claim["status"]["phase"] == "Bound", where
        assert claim["spec"]["storageClassName"] == (classes[where] or default), where


def matches(requirement: dict, labels: dict[str, str]) -> bool:
    key, operator = requirement["key"], requirement["operator"]
    values = requirement.get("values", [])
    return {
        "In": lambda: labels.get(key) in values,
        "NotIn": lambda: labels.get(key) not in values,
        "Exists": lambda: key in labels,
        "DoesNotExist": lambda: key not in labels,
        "Gt": lambda: key in labels and int(labels[key]) > int(values[0]),
        "Lt": lambda: key in labels and int(labels[key]) < int(values[0]),
    }[operator]()


def test_pods_run_on_the_nodes_their_selectors_and_affinities_allow(installed) -> None:
    kube, rendered, _ = installed
    nodes = {n["metadata"]["name"]: n for n in kube.list("Node")}
    labelled = set(inventory_labels())
    pinned, on_local_volumes, problems = 0, 0, []
    for workload in workloads(kube, rendered):
        namespace = workload["metadata"]["namespace"]
        pod_spec = pod_template(workload)["spec"]
        required = (
            ((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
            .get("requiredDuringSchedulingIgnoredDuringExecution", {})
            .get("nodeSelectorTerms", [])
        )
        selector = pod_spec.get("nodeSelector") or {}
        anti = [
            t
            for t in ((pod_spec.get("affinity") or {}).get("podAntiAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution", []
            )
            if t["topologyKey"] == "kubernetes.io/hostname"
        ]
        pinned += bool(required or selector)
        hosts = []
        for pod in owned_pods(kube, workload):
            where = f"{workload['kind']} {namespace}/{pod['metadata']['name']}"
            node = nodes.get(pod["spec"].get("nodeName"))
            if node is None:
                problems.append(f"{where} is not scheduled")
                continue
            labels = node["metadata"]["labels"]
            hosts.append(node["metadata"]["name"])
            if not selector.items() <= labels.items():
                problems.append(f"{where} on {hosts[-1]} despite nodeSelector {selector}")
            if required and not any(
                all(matches(r, labels) for r in term.get("matchExpressions", []))
                for term in required
            ):
                problems.append(f"{where} on {hosts[-1]} despite its node affinity")
            if (required or selector) and hosts[-1] not in labelled:
                problems.append(f"{where} on {hosts[-1]}, a node the inventory does not label")
            tolerated = pod["spec"].get("tolerations") or []
            for taint in node["spec"].get("taints") or []:
                if taint["effect"] == "NoSchedule" and not any(
                    (t.get("operator") == "Exists" and t.get("key") in (None, taint["key"]))
                    or t.get("key") == taint["key"]
                    for t in tolerated
                ):
                    problems.append(f"{where} on {hosts[-1]} despite its taint {taint['key']}")
            # A volume that lives on one node (a local PersistentVolume) brings its pod there.
            for volume in pod["spec"].get("volumes", []):
                if "persistentVolumeClaim" not in volume:
                    continue
                claim = kube.get(
                    "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], namespace
                )
                pv = kube.get("PersistentVolume", claim["spec"]["volumeName"])
                terms = ((pv["spec"].get("nodeAffinity") or {}).get("required") or {}).get(
                    "nodeSelectorTerms", []
                )
                on_local_volumes += bool(terms)
                if terms and not any(
                    all(matches(r, labels) for r in term.get("matchExpressions", []))
                    for term in terms
                ):
                    problems.append(f"{where} on {hosts[-1]}, not where its volume is")
        if anti and len(set(hosts)) != len(hosts):
            problems.append(f"{workload['metadata']['name']}: two pods on one node: {hosts}")
    assert pinned >= 3, "the databases are pinned to labelled nodes"
    assert on_local_volumes == sum(len(database_nodes(role)) for role in LOCAL_NAMESPACES)
    assert not problems, problems


def test_a_second_render_is_byte_for_byte_the_same(renders: Renders) -> None:
    assert renders.second
    first, second = files(renders.first_root), files(renders.second_root)
    assert sorted(first) == sorted(second)
    different = [str(path) for path in first if first[path] != second[path]]
    assert not different, f"renders differ in {different}"
    secrets = list(renders.second_root.rglob("secret-*.yaml"))
    assert len(secrets) >= 2
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in secrets)


def test_applying_the_second_render_changes_nothing(installed, renders) -> None:
    kube, rendered, _ = installed
    second = renders.second
    for folder in second:
        done = kubectl(
            kube, "diff", "--server-side", f"--field-manager={MANAGER}", "-f", str(folder)
        )
        assert done.returncode == 0, f"{folder.name} differs from the cluster:\n{done.stdout}"
    before = {key(m): live(kube, m) for m in rendered}
    apply(kube, second)
    after = {key(m): live(kube, m) for m in rendered}
    changed = [k for k in before if comparable(before[k]) != comparable(after[k])]
    assert not changed, changed
    # Nothing else writes these, so an apply that changes nothing leaves them as they were.
    steady = [k for k in before if k[0] in ("Namespace", "ConfigMap", "Secret", "Service")]
    assert steady
    moved = [
        k
        for k in steady
        if before[k]["metadata"]["resourceVersion"] != after[k]["metadata"]["resourceVersion"]
    ]
    assert not moved, moved


def key(manifest: dict) -> tuple[str, str | None, str]:
    return manifest["kind"], manifest["metadata"].get("namespace"), manifest["metadata"]["name"]


def comparable(obj: dict) -> dict:
    """An object without what controllers write as they run: status, versions."""
    obj = copy.deepcopy(obj)
    obj.pop("status", None)
    obj["metadata"].pop("resourceVersion", None)
    obj["metadata"]["managedFields"] = [
        f for f in obj["metadata"].get("managedFields") or [] if f["manager"] == MANAGER
    ]
    return obj
