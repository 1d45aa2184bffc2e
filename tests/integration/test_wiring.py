"""The wiring of the rendered install: every component gets what its image reads.

Three checks over what render mode writes (playbooks/site.yml and playbooks/interlink.yml):
- the wiring tables (the ``wiring`` column of each component row) cover every container;
- the output is complete: every Secret, ConfigMap, PVC and Service a pod or a URL refers to is
  in it, applied folder by folder in the playbook's order (Namespaces first);
- this project's own images run with exactly the rendered configuration: each container's
  command starts as a process with the rendered env (cluster DNS names mapped to local
  stand-ins, Secrets read from the rendered Secrets) and its readiness probe answers 200.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest
import yaml
from render_site import REPO, manifests, render_site

PUBLIC_ADDRESS = "203.0.113.10"
DMS_URL = "http://dms.example:9999"
# The order in which playbooks/site.yml writes (and applies) its parts.
SITE_ORDER = ["registry_db", "policy_runtime", "registries", "utils", "metrics_db", "metrics",
              "core_services"]
TABLES = {
    "registries": "registries_components",
    "utils": "utils_components",
    "metrics": "metrics_components",
    "core_services": "core_services_components",
}
WIRING_KEYS = {"value", "mongo", "secret", "default", "required", "meaning", "file", "keep_empty"}
# Deployments that run this project's images, with the Dockerfile of each image.
OUR_IMAGES = {
    "policies-system": REPO / "policy_runtime" / "Dockerfile",
    "clusters-db": REPO / "policy_runtime" / "Dockerfile",
    "nunet-plugin": REPO / "interlink_nunet" / "Dockerfile",
}
URL = re.compile(r"(?P<name>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc(?:\.cluster\.local)?"
                 r":(?P<port>\d+)")


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The rendered management cluster and NuNet plugin: part directory -> path."""
    site = tmp_path_factory.mktemp("site")
    done = render_site(site, {"aios_public_address": PUBLIC_ADDRESS})
    assert done.returncode == 0, done.stdout[-3000:]
    plugin = tmp_path_factory.mktemp("interlink")
    done = render_site(plugin, {"interlink_dms_url": DMS_URL, "interlink_render_chart": False},
                       playbook="interlink.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    parts = {name: site / name for name in SITE_ORDER}
    parts["interlink"] = plugin / "interlink"
    return parts


def objects(parts: dict[str, Path], names: list[str] | None = None) -> list[dict]:
    """The manifests of the parts, in apply order: part by part, Namespaces first."""
    found = []
    for name in names or list(parts):
        ordered = sorted(manifests(parts[name]).values(), key=lambda m: m["kind"] != "Namespace")
        found.extend(ordered)
    return found


def pod_spec(manifest: dict) -> dict | None:
    spec = manifest.get("spec", {})
    if manifest["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    return (spec.get("template") or {}).get("spec")


def deployment(parts: dict[str, Path], name: str) -> dict:
    return next(m for m in objects(parts)
                if m["kind"] == "Deployment" and m["metadata"]["name"] == name)


# --- the wiring tables ---------------------------------------------------------------------

def table_rows() -> Iterator[tuple[str, dict]]:
    for role, table in TABLES.items():
        defaults = yaml.safe_load((REPO / "roles" / role / "defaults" / "main.yml").read_text())
        for row in defaults[table]:
            yield role, row
    plugin = yaml.safe_load((REPO / "roles" / "interlink" / "vars" / "main.yml").read_text())
    yield "interlink", plugin["_interlink_plugin_component"]


def test_the_wiring_table_covers_every_container() -> None:
    for role, row in table_rows():
        containers = [row["name"]] + [s["name"] for s in row.get("sidecars", [])]
        assert sorted(row.get("wiring", {})) == sorted(containers), f"{role}: {row['name']}"
        for container, reads in row["wiring"].items():
            for name, fact in reads.items():
                where = f"{role}: {row['name']}/{container}: {name}"
                assert set(fact) <= WIRING_KEYS, f"{where}: unknown keys {set(fact) - WIRING_KEYS}"
                assert fact.get("meaning") and fact.get("file"), f"{where}: meaning and file"
                if fact["file"].startswith(("policy_runtime/", "interlink_nunet/")):
                    assert (REPO / fact["file"]).is_file(), where


def test_upstreams_fixes_are_in_the_output(output: dict[str, Path]) -> None:
    def env(name: str, container: int = 0) -> dict[str, str | None]:
        spec = pod_spec(deployment(output, name))["containers"][container]
        return {e["name"]: e.get("value") for e in spec["env"]}

    gateway = env("cluster-controller-gateway")
    images = [n for n in gateway if n.endswith("_IMAGE_NAME")]
    assert len(images) == 7 and all(gateway[n] for n in images)
    assert json.loads(gateway["CLUSTER_CONTROLLER_GATEWAY_ACTIONS_MAP"]) == {}
    assert json.loads(gateway["CLUSTER_CONTROLLER_GATEWAY_POLICY_MAP"]) == {}
    assert gateway["CLUSTER_CONTROLLER_ROUTE"] == ""
    parser = env("parser")
    assert parser["TEST_MODE_ON"] == "" and parser["TASK_DB_URI"].startswith("sqlite:")
    assert "LLM_PLANNER_TASK_API" in parser
    containers = {c["name"] for c in pod_spec(deployment(output, "tasks-db"))["containers"]}
    assert containers == {"tasks-db", "status-writer", "redis"}
    containers = {c["name"] for c in pod_spec(deployment(output, "vdag-processor"))["containers"]}
    assert containers == {"vdag-processor", "redis"}
    assert {"VDAG_DB_SERVICE_URL", "SEARCH_SERVER_API_URL", "GLOBAL_TASKS_DB_URL"} <= set(
        env("vdag-processor"))
    assert env("resource-allocator")["POLICY_SYSTEM_EXECUTOR_ID"] == "executor-001"
    assert env("search-server")["POLICIES_SERVER_URL"]
    assert {"POLICY_SYSTEM_EXECUTOR_ID", "POLICY_EXECUTOR_HOST_URL"} <= set(env("failure-notifier"))
    deployment(output, "networks-registry")


# --- the output is complete ----------------------------------------------------------------

def test_the_output_applies_in_order_with_nothing_missing(output: dict[str, Path]) -> None:
    """What `kubectl apply` of each folder in turn would need: every namespace before its
    objects, every Secret, ConfigMap, PVC a pod uses, a Service behind every selector."""
    applied: dict[tuple[str, str | None, str], dict] = {}
    missing = []
    for manifest in objects(output):
        namespace = manifest["metadata"].get("namespace")
        if namespace and ("Namespace", None, namespace) not in applied:
            missing.append(f"namespace {namespace} before {manifest['kind']}/"
                           f"{manifest['metadata']['name']}")
        applied[(manifest["kind"], namespace, manifest["metadata"]["name"])] = manifest
    for (kind, namespace, name), manifest in applied.items():
        pod = pod_spec(manifest)
        if not pod:
            continue
        where = f"{kind} {namespace}/{name}"
        claims = {t["metadata"]["name"] for t in manifest["spec"].get("volumeClaimTemplates", [])}
        for volume in pod.get("volumes", []):
            if "secret" in volume:
                needed = ("Secret", volume["secret"]["secretName"])
            elif "configMap" in volume:
                needed = ("ConfigMap", volume["configMap"]["name"])
            elif "persistentVolumeClaim" in volume:
                needed = ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
            else:
                continue
            if needed[1] not in claims and (needed[0], namespace, needed[1]) not in applied:
                missing.append(f"{where}: {needed[0]} {needed[1]}")
        for container in pod.get("initContainers", []) + pod["containers"]:
            for variable in container.get("env", []):
                for ref_kind, ref in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                    source = variable.get("valueFrom", {}).get(ref)
                    if not source:
                        continue
                    target = applied.get((ref_kind, namespace, source["name"]))
                    target = target or {}
                    data = {**target.get("data", {}), **target.get("stringData", {})}
                    if source["key"] not in data:
                        missing.append(f"{where}: {ref_kind} {source['name']} key {source['key']}")
    pod_labels = [(ns, m["spec"]["template"]["metadata"]["labels"])
                  for (kind, ns, _), m in applied.items() if kind in ("Deployment", "StatefulSet")]
    for (kind, namespace, name), service in applied.items():
        selector = dict(service.get("spec", {}).get("selector") or {}) if kind == "Service" else {}
        # set on each pod by its StatefulSet, not in the template
        selector.pop("statefulset.kubernetes.io/pod-name", None)
        if selector and not any(ns == namespace and selector.items() <= labels.items()
                                for ns, labels in pod_labels):
            missing.append(f"Service {namespace}/{name} selects no pod")
    assert not missing, missing


def test_every_in_cluster_url_names_a_rendered_service_and_port(output: dict[str, Path]) -> None:
    services = {(m["metadata"]["namespace"], m["metadata"]["name"]): m
                for m in objects(output) if m["kind"] == "Service"}
    unresolved, checked = [], 0
    for manifest in objects(output):
        pod = pod_spec(manifest)
        for container in (pod or {}).get("containers", []):
            for variable in container.get("env", []):
                for found in URL.finditer(variable.get("value") or ""):
                    checked += 1
                    service = services.get((found["namespace"], found["name"]))
                    ports = [p["port"] for p in (service or {}).get("spec", {}).get("ports", [])]
                    if int(found["port"]) not in ports:
                        unresolved.append(f"{manifest['metadata']['name']}/{container['name']} "
                                          f"{variable['name']}: {found[0]}")
    assert checked > 50
    assert not unresolved, unresolved


def test_member_clusters_get_node_ports_on_the_public_address(output: dict[str, Path]) -> None:
    gateway = pod_spec(deployment(output, "cluster-controller-gateway"))["containers"][0]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    node_ports = {p["nodePort"]: m["metadata"]["name"] for m in objects(output)
                  if m["kind"] == "Service" for p in m["spec"]["ports"] if "nodePort" in p}
    meant = {"global_block_metrics_redis_host": "metrics-redis",
             "global_cluster_metrics_redis_host": "metrics-redis",
             "global_vdag_metrics_redis_host": "metrics-redis",
             "policy_db_url": "policies-system", "blocks_db_url": "blocks-db-svc",
             "cluster_db_url": "clusters-db-service", "vdag_db_url": "vdag-db-svc",
             "vdag_controller_db_url": "vdag-db-svc"}
    global_map = json.loads(env["GLOBAL_SERVICES_MAP"])
    assert set(global_map) == set(meant)
    for key, url in [*global_map.items(), ("policy_db_url", env["POLICY_DB_URL"])]:
        parts = urlsplit(url)
        assert parts.hostname == PUBLIC_ADDRESS, key
        assert node_ports.get(parts.port) == meant[key], key


# --- our own images, run for real ----------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def image_config(dockerfile: Path) -> tuple[dict[str, str], list[str]]:
    """The final stage's ENV (literal values) and ENTRYPOINT of a Dockerfile."""
    final = dockerfile.read_text().split("\nFROM ")[-1].replace("\\\n", " ")
    env: dict[str, str] = {}
    entrypoint: list[str] = []
    for line in final.splitlines():
        instruction, _, rest = line.strip().partition(" ")
        if instruction == "ENV":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                if "$" not in value:
                    env[key] = value
        elif instruction == "ENTRYPOINT":
            entrypoint = json.loads(rest)
    return env, entrypoint


def settings_names(name: str) -> set[str]:
    """Every environment variable the settings class of an image of ours reads."""
    if name == "nunet-plugin":
        from interlink_nunet.config import Settings as PluginSettings
        return {f"NUNET_PLUGIN_{field.upper()}" for field in PluginSettings.model_fields}
    from policy_runtime.config import Settings as RuntimeSettings
    names = set()
    for field_name, field in RuntimeSettings.model_fields.items():
        alias = field.validation_alias
        names |= set(getattr(alias, "choices", [])) if alias else {f"AIOS_{field_name.upper()}"}
    return names


def local_mongo_uri(uri: str, port: int) -> str:
    """The rendered replica-set URI with its hosts mapped to the embedded database."""
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "replicaSet"]
    query.append(("directConnection", "true"))
    return urlunsplit((parts.scheme, f"127.0.0.1:{port}", parts.path, urlencode(query), ""))


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The embedded database (for the registry DB) and the stand-in DMS: name -> address."""
    from policy_runtime.embedded_db import EmbeddedDatabase

    data = tmp_path_factory.mktemp("stand-ins")
    database = EmbeddedDatabase(data / "db").start()
    dms_port = free_port()
    tests = REPO / "interlink_nunet" / "tests"
    dms = subprocess.Popen(
        [sys.executable, str(tests / "dms_standin.py"), "--port", str(dms_port),
         "--state", str(data / "dms.json"), "--peers", str(tests / "fixtures" / "seed_peers.json")],
        stdout=(data / "dms.log").open("w"), stderr=subprocess.STDOUT,
    )
    try:
        yield {"mongo_port": str(database.port), "dms": f"http://127.0.0.1:{dms_port}"}
    finally:
        dms.send_signal(signal.SIGTERM)
        dms.wait(10)
        database.stop()


def rendered_secret(output: dict[str, Path], namespace: str, name: str, key: str) -> str:
    for manifest in objects(output):
        if (manifest["kind"], manifest["metadata"].get("namespace"),
                manifest["metadata"]["name"]) == ("Secret", namespace, name):
            return manifest["stringData"][key]
    raise AssertionError(f"Secret {namespace}/{name} is not in the output")


def local(value: str, ports: dict[str, str], paths: dict[str, str],
          stand_ins: dict[str, str]) -> str:
    """A rendered value with cluster names, container ports and mount paths mapped to this host."""
    if value.startswith("mongodb://") and ".svc" in value:
        return local_mongo_uri(value, int(stand_ins["mongo_port"]))
    if value == DMS_URL:
        return stand_ins["dms"]
    if value in ports:
        return ports[value]
    for mount, path in paths.items():
        if value == mount or value.startswith(mount + "/"):
            return path + value[len(mount):]
    return value


@pytest.mark.parametrize("name", sorted(OUR_IMAGES))
def test_our_images_become_ready_with_the_rendered_configuration(
    output: dict[str, Path], stand_ins: dict[str, str], tmp_path: Path, name: str,
) -> None:
    manifest = deployment(output, name)
    namespace = manifest["metadata"]["namespace"]
    pod = pod_spec(manifest)
    image_env, entrypoint = image_config(OUR_IMAGES[name])
    mounts = {v["name"]: tmp_path / v["name"] for v in pod.get("volumes", [])}
    for container in pod["containers"]:
        unread = {e["name"] for e in container["env"]} - settings_names(name)
        assert not unread, f"{name}/{container['name']} sets what nothing reads: {unread}"
        ports = {str(p["containerPort"]): str(free_port()) for p in container["ports"]}
        paths = {m["mountPath"]: str(mounts[m["name"]]) for m in container.get("volumeMounts", [])}
        for path in paths.values():
            Path(path).mkdir(parents=True, exist_ok=True)

        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
        mapping = (ports, paths, stand_ins)
        env.update({k: local(v, *mapping) for k, v in image_env.items() if k != "PATH"})
        for variable in container["env"]:
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            value = (rendered_secret(output, namespace, ref["name"], ref["key"]) if ref
                     else variable["value"])
            env[variable["name"]] = local(value, *mapping)
        command = container.get("command", entrypoint) + container.get("args", [])
        program = Path(sys.executable).parent / command[0]
        probe = container["readinessProbe"]["httpGet"]
        url = f"http://127.0.0.1:{ports[str(probe['port'])]}{probe['path']}"
        log = tmp_path / f"{container['name']}.log"
        with log.open("w") as out:
            process = subprocess.Popen([str(program), *command[1:]], env=env, cwd=tmp_path,
                                       stdout=out, stderr=subprocess.STDOUT)
        try:
            status, deadline = None, time.monotonic() + 90
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    status = httpx.get(url, timeout=2).status_code
                except httpx.TransportError:
                    status = None
                if status == 200:
                    break
                time.sleep(0.3)
            assert status == 200, (
                f"{name}/{container['name']} not ready at {url} (last status {status}, exit "
                f"{process.poll()}): {log.read_text()[-3000:]}"
            )
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
