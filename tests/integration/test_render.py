"""Render mode end to end: every manifest valid, the seed's tables exactly, deterministic."""

from __future__ import annotations

import json
import re
from pathlib import Path

import kubernetes_validate
import pytest
from render_site import manifests, render_site

# Copied from seeds/000 (the management-cluster install) on purpose: a typo in a role's
# table must fail here. (namespace, service, port, NodePort or None)
SEED_SERVICES = [
    ("registries", "blocks-db-svc", 3001, 30100),
    ("registries", "clusters-db-service", 3000, 30101),
    ("registries", "policies-system", 10000, 30102),
    ("registries", "vdag-db-svc", 10501, 30103),
    ("registries", "assets-db-registry-svc", 4000, 30104),
    ("registries", "adhoc-server-registry-svc", 6000, 30105),
    ("registries", "templates-registry-svc", 9000, 30106),
    ("registries", "spec-registry-svc", 8000, 30107),
    ("registries", "tasks-db-svc", 8000, 30108),
    ("registries", "containers-registry-svc", 8000, 30109),
    ("registries", "layers-registry-svc", 8002, 30110),
    ("registries", "splits-runners-registry-svc", 8001, 30111),
    ("registries", "components-registry-svc", 4000, 30112),
    ("utils", "search-server", 12000, 30150),
    ("utils", "resource-allocator", 8765, 30151),
    ("utils", "resource-allocator", 7777, None),
    ("utils", "vdag-processor", 10500, None),
    ("utils", "failure-notifier", 5000, None),
    ("metrics-system", "metrics-redis", 6379, 30200),
    ("metrics-system", "global-block-metrics", 8889, 30201),
    ("metrics-system", "global-cluster-metrics", 8888, 30202),
    ("metrics-system", "global-vdag-metrics", 8890, 30203),
    ("services", "parser", 8000, 30500),
    ("services", "cluster-controller-gateway", 5000, 30600),
    # Not in the seed's table, but deployed by upstream's installer
    # (k8s/installer/registries/registries/network-registry.yaml of OpenCyberspace/AIGr.id).
    ("registries", "networks-registry-svc", 5000, 30113),
]
# The address member clusters reach the management cluster at (GLOBAL_SERVICES_MAP).
PUBLIC = {"aios_public_address": "203.0.113.10"}
KUBERNETES_VERSIONS = ["1.29.0", "1.33.0"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, dict]:
    directory = tmp_path_factory.mktemp("manifests")
    done = render_site(directory, PUBLIC)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return manifests(directory)


def is_operator_object(manifest: dict) -> bool:
    """ServiceMonitors and PrometheusRules: not Kubernetes' own kinds; test_monitoring.py
    validates them against the prometheus-operator's CRD schemas."""
    return manifest["apiVersion"].startswith("monitoring.coreos.com/")


def assert_strictly_valid(named: dict, version: str) -> None:
    """Every manifest of ``named`` (name or path -> manifest) valid for ``version``,
    unknown fields included."""
    for name, manifest in named.items():
        if is_operator_object(manifest):
            continue
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is not valid for Kubernetes {version}: {exc.message}")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_strictly_valid(rendered: dict[Path, dict], version: str) -> None:
    assert len(rendered) > 50
    assert_strictly_valid({path.name: m for path, m in rendered.items()}, version)


def test_files_are_named_role_kind_name(rendered: dict[Path, dict]) -> None:
    for path, manifest in rendered.items():
        assert path.name == f"{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
    roles = {path.parent.name for path in rendered}
    assert roles == {"registry_db", "policy_runtime", "registries", "utils", "metrics_db",
                     "metrics", "core_services", "monitoring"}


def test_services_match_the_seed_tables(rendered: dict[Path, dict]) -> None:
    services = {
        (m["metadata"]["namespace"], m["metadata"]["name"]): m
        for m in rendered.values() if m["kind"] == "Service"
    }
    found = []
    for (namespace, name), service in services.items():
        for port in service["spec"]["ports"]:
            found.append((namespace, name, port["port"], port.get("nodePort")))
    missing = [row for row in SEED_SERVICES if row not in found]
    assert not missing, f"services of the seed not rendered as specified: {missing}"
    claimed = [row[3] for row in found if row[3] is not None]
    assert len(claimed) == len(set(claimed)), "a NodePort is claimed twice"
    assert sorted(claimed) == sorted(row[3] for row in SEED_SERVICES if row[3])


def test_every_container_is_hardened(rendered: dict[Path, dict]) -> None:
    for path, manifest in rendered.items():
        spec = manifest.get("spec", {})
        pod = (spec.get("template") or {}).get("spec") or (
            spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
        )
        if not pod:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True, path.name
        for container in pod["containers"]:
            resources = container["resources"]
            assert resources["requests"] and resources["limits"], path.name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, path.name
            if manifest["kind"] in ("Deployment", "StatefulSet") and container.get("ports"):
                assert "readinessProbe" in container and "livenessProbe" in container, path.name


def test_registry_database_keeps_the_seed_names(rendered: dict[Path, dict]) -> None:
    by_name = {(m["kind"], m["metadata"]["name"]): m for m in rendered.values()}
    statefulset = by_name[("StatefulSet", "registry")]
    assert statefulset["metadata"]["namespace"] == "registries"
    assert statefulset["spec"]["replicas"] == 3
    assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "10Gi"
    }
    affinity = statefulset["spec"]["template"]["spec"]["affinity"]
    term = affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["nodeSelectorTerms"][0]["matchExpressions"][0] == {
        "key": "registry", "operator": "In", "values": ["yes"]
    }
    assert affinity["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0][
        "topologyKey"] == "kubernetes.io/hostname"
    assert ("Job", "registry-init-client") in by_name
    assert "rs0" in by_name[("ConfigMap", "registry-init")]["data"]["init.js"]
    assert {("Service", f"registry-{i}") for i in range(3)} <= set(by_name)
    assert ("Job", "metrics-db-init-client") in by_name


def test_consumers_get_the_uri_under_the_name_their_image_reads(
    rendered: dict[Path, dict],
) -> None:
    deployments = {m["metadata"]["name"]: m for m in rendered.values() if m["kind"] == "Deployment"}

    def env(name: str, container: int = 0) -> dict:
        spec = deployments[name]["spec"]["template"]["spec"]["containers"][container]
        return {e["name"]: e.get("value") for e in spec["env"]}

    expected = (
        "mongodb://registry-0.registries.svc.cluster.local:27017,"
        "registry-1.registries.svc.cluster.local:27017,"
        "registry-2.registries.svc.cluster.local:27017/blocks?replicaSet=rs0"
    )
    assert env("blocks-db") == {"MONGO_HOST_URL": expected}
    assert env("tasks-db")["MONGO_URL"] == env("tasks-db", 1)["MONGO_URL"]
    for runtime in ("policies-system", "clusters-db"):
        assert "/?" not in env(runtime)["AIOS_MONGO_URI"]
        assert not {"DB_URL", "MONGO_URL", "MONGO_HOST_URL"} & set(env(runtime))


def test_rendering_twice_gives_identical_files(
    rendered: dict[Path, dict], tmp_path: Path
) -> None:
    done = render_site(tmp_path, PUBLIC)
    assert done.returncode == 0
    repeat = render_site(tmp_path, PUBLIC)
    assert "changed=0" in repeat.stdout, "a second render into the same directory changes nothing"
    # Generated Secrets differ between directories (and are reused within one), and so does
    # the digest of the runtimes' tokens file that their pods carry.
    digest = re.compile(r"(aios\.platform/tokens-file-sha256: )[0-9a-f]{64}")
    again = {p.relative_to(tmp_path): digest.sub(r"\1", p.read_text())
             for p in sorted(tmp_path.rglob("*.yaml")) if not p.name.startswith("secret-")}
    first_root = next(iter(rendered)).parents[1]
    first = {p.relative_to(first_root): digest.sub(r"\1", p.read_text()) for p in rendered
             if not p.name.startswith("secret-")}
    assert again == first
    assert sum("aios.platform/tokens-file-sha256: " in text for text in first.values()) == 2


def test_options_render_valid_manifests(tmp_path: Path) -> None:
    done = render_site(tmp_path, {
        "aios_image_pull_secret": "regcred",
        "aios_components": ["registries", "metrics"],
        "aios_metrics_db_external_uri": "mongodb://metrics.example:27017/?tls=true",
        "registry_db_replicas": 2,
        "registry_db_local_volumes": True,
        "registry_db_local_nodes": ["worker-1", "worker-2"],
        "registry_db_backup_enabled": True,
    })
    assert done.returncode == 0, done.stdout[-3000:]
    rendered = manifests(tmp_path)
    assert {p.parent.name for p in rendered} == {"registry_db", "policy_runtime", "registries",
                                                 "metrics", "monitoring"}
    kinds = {(m["kind"], m["metadata"]["name"]) for m in rendered.values()}
    assert {("CronJob", "registry-backup"), ("StorageClass", "registry-local"),
            ("PersistentVolume", "registry-worker-1"), ("PersistentVolume", "registry-backup"),
            ("Job", "registry-volume-worker-1"), ("Job", "registry-volume-worker-2")} <= kinds
    by_name = {(m["kind"], m["metadata"]["name"]): m for m in rendered.values()}
    # local volume mode: the backup claim is bound to its own local volume, not left Pending
    backup = by_name[("PersistentVolumeClaim", "registry-backup")]["spec"]
    assert (backup["storageClassName"], backup["volumeName"]) == ("registry-local",
                                                                  "registry-backup")
    # the init Job's and the backup's pods are not the StatefulSet's
    statefulset = by_name[("StatefulSet", "registry")]["spec"]
    for kind, name in (("Job", "registry-init-client"), ("Job", "registry-volume-worker-1")):
        labels = by_name[(kind, name)]["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] != statefulset["selector"]["matchLabels"][
            "app.kubernetes.io/name"]
    for manifest in rendered.values():
        if is_operator_object(manifest):
            continue
        kubernetes_validate.validate(manifest, "1.33.0", strict=True)
        pod = manifest.get("spec", {}).get("template", {}).get("spec")
        if pod:
            assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    # the tokens files list the callers of the installed parts only
    tokens_file = by_name[("Secret", "aios-policy-runtime-tokens-file")]["stringData"]
    assert [e["name"] for e in json.loads(tokens_file["policies-system.json"])] == [
        "prometheus", "templates-registry"]
    assert [e["name"] for e in json.loads(tokens_file["clusters-db.json"])] == ["prometheus"]
    assert ("Secret", "search-server-runtime-token") not in by_name
    metrics = next(m for m in rendered.values() if m["metadata"]["name"] == "global-block-metrics"
                   and m["kind"] == "Deployment")
    container = metrics["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["MONGO_URL"] == "mongodb://metrics.example:27017/block_metrics?tls=true"


def test_render_mode_refuses_unknown_components(tmp_path: Path) -> None:
    done = render_site(tmp_path, {"aios_components": ["registries", "bogus"]})
    assert done.returncode != 0
    assert "aios_components may only list" in done.stdout


def test_bad_variables_are_named(tmp_path: Path) -> None:
    done = render_site(tmp_path, {"registry_db_replicas": "three"})
    assert done.returncode != 0
    assert "registry_db_replicas" in done.stdout


def test_preflight_and_node_labels_skip_in_render_mode(tmp_path: Path) -> None:
    done = render_site(tmp_path, PUBLIC)
    assert "preflight's cluster checks are skipped" in done.stdout
    assert "node labels are applied to a live cluster only" in done.stdout
    assert not (tmp_path / "preflight").exists()


def test_token_secret_is_rendered_as_given(tmp_path: Path) -> None:
    done = render_site(tmp_path, {**PUBLIC, "policy_runtime_api_token": "t0ken-for-render"})
    assert done.returncode == 0
    secret = manifests(tmp_path / "policy_runtime")[
        tmp_path / "policy_runtime" / "secret-aios-policy-runtime-token.yaml"]
    assert secret["kind"] == "Secret" and secret["stringData"] == {"token": "t0ken-for-render"}
    assert "t0ken-for-render" not in done.stdout, "the token must not be logged"


def test_generated_secret_is_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "policy_runtime" / "secret-aios-policy-runtime-token.yaml"
    assert render_site(tmp_path, PUBLIC).returncode == 0
    token = manifests(tmp_path / "policy_runtime")[path]["stringData"]["token"]
    assert len(token) >= 32
    assert path.stat().st_mode & 0o777 == 0o600
    # and so are the token of every component that calls the runtime
    components = {p: m["stringData"]["token"] for p, m in manifests(tmp_path).items()
                  if p.name.endswith("-runtime-token.yaml") and p != path}
    assert len(components) == 7 and all(len(t) >= 32 for t in components.values())
    again = render_site(tmp_path, PUBLIC)
    assert again.returncode == 0 and token not in again.stdout
    assert manifests(tmp_path / "policy_runtime")[path]["stringData"]["token"] == token
    assert not [t for t in components.values() if t in again.stdout]
    assert {p: manifests(p.parent)[p]["stringData"]["token"] for p in components} == components


def test_external_secrets_are_named_in_the_readme(tmp_path: Path) -> None:
    done = render_site(tmp_path, {**PUBLIC, "aios_render_secrets": "external"})
    assert done.returncode == 0, done.stdout[-3000:]
    assert not list(tmp_path.rglob("secret-*.yaml"))
    readme = (tmp_path / "README.md").read_text()
    assert "Secret `aios-policy-runtime-token` in namespace `registries`" in readme
    # no token is known, so neither is the tokens file listing their hashes
    assert "Secret `search-server-runtime-token` in namespace `utils`" in readme
    assert ("Secret `aios-policy-runtime-tokens-file` in namespace `registries` (part "
            "`policy_runtime`),\n  keys `policies-system.json`, `clusters-db.json`") in readme


def test_a_variable_an_image_needs_fails_the_render_by_name(tmp_path: Path) -> None:
    done = render_site(tmp_path, {**PUBLIC, "core_services_infra_image": ""})
    assert done.returncode != 0
    assert ("cluster-controller-gateway: container cluster-controller-gateway needs "
            "INFRA_CONTAINER_IMAGE_NAME") in done.stdout
    no_address = render_site(tmp_path / "no-address")
    assert no_address.returncode != 0
    assert "needs GLOBAL_SERVICES_MAP" in no_address.stdout
    assert "aios_public_address" in no_address.stdout


def test_a_variable_no_image_reads_fails_the_render_by_name(tmp_path: Path) -> None:
    rows = [{"name": "search-server", "service": "search-server", "image": "example/search:1",
             "ports": [{"name": "http", "port": 12000}], "env": {"CLUSTER_DB_URL": "http://x"},
             "wiring": {"search-server": {}}}]
    done = render_site(tmp_path, {**PUBLIC, "utils_components": rows})
    assert done.returncode != 0
    assert ("search-server: container search-server sets CLUSTER_DB_URL, which its image does "
            "not read") in done.stdout
