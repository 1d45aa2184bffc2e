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

import base64
import hashlib
import json
import os
import re
import secrets
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
WIRING_KEYS = {"value", "mongo", "secret", "default", "required", "meaning", "file", "keep_empty",
               "header"}
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
                if fact.get("header"):  # the bearer header upstream's callers add
                    assert fact["file"] == "docs/compatibility/README.md", where
                    assert fact["secret"] == {"name": f"{row['name']}-runtime-token",
                                              "key": "token"}, where


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


# --- the callers of the runtime: a token of their own each ---------------------------------

# The runtimes (Deployments), with the key of each one's tokens file and what in an env
# value means a call to it (its Service, or its NodePort on the public address).
RUNTIMES = {
    "policies-system": ("policies-system.json", ("policies-system.registries.svc",
                                                 f"{PUBLIC_ADDRESS}:30102")),
    "clusters-db": ("clusters-db.json", ("clusters-db-service.registries.svc",
                                         f"{PUBLIC_ADDRESS}:30101")),
}


def tokens_files(output: dict[str, Path]) -> dict[str, dict[str, dict]]:
    """Runtime -> its rendered tokens file, by token name."""
    aios = yaml.safe_load((REPO / "roles" / "aios" / "defaults" / "main.yml").read_text())
    return {runtime: {entry["name"]: entry for entry in json.loads(rendered_secret(
                output, "registries", aios["aios_runtime_tokens_file_secret"], key))}
            for runtime, (key, _) in RUNTIMES.items()}


def component_tokens(output: dict[str, Path]) -> dict[str, str]:
    """Component -> the token of its rendered <component>-runtime-token Secret (not the
    runtime's own admin token, aios-policy-runtime-token)."""
    return {m["metadata"]["name"].removesuffix("-runtime-token"): m["stringData"]["token"]
            for m in objects(output)
            if m["kind"] == "Secret" and m["metadata"]["name"].endswith("-runtime-token")
            and m["metadata"]["name"] != "aios-policy-runtime-token"}


def test_every_caller_of_the_runtime_has_a_token_of_its_own(output: dict[str, Path]) -> None:
    """Every Deployment whose env points at policies-system or clusters-db-service reads
    AIOS_RUNTIME_TOKEN from a Secret of its own, whose token is in the tokens file of each
    runtime it calls (one token for both), with a role short of admin; the files list no
    one else but Prometheus (the ServiceMonitors' reader)."""
    files = tokens_files(output)
    tokens = component_tokens(output)
    expected: dict[str, set[str]] = {runtime: {"prometheus"} for runtime in RUNTIMES}
    for manifest in objects(output):
        name = manifest["metadata"]["name"]
        if manifest["kind"] != "Deployment" or name in RUNTIMES:
            continue
        container = pod_spec(manifest)["containers"][0]
        env = {e["name"]: e for e in container["env"]}
        calls = {runtime for runtime, (_, marks) in RUNTIMES.items()
                 if any(mark in (e.get("value") or "") for e in env.values() for mark in marks)}
        if not calls:
            assert "AIOS_RUNTIME_TOKEN" not in env, name
            continue
        assert env["AIOS_RUNTIME_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": f"{name}-runtime-token", "key": "token"}, name
        for runtime in calls:
            expected[runtime].add(name)
    for runtime, file in files.items():
        assert set(file) == expected[runtime], runtime
        for name, entry in file.items():
            assert entry["sha256"] == hashlib.sha256(tokens[name].encode()).hexdigest(), name
            assert entry["role"] in ("operator", "executor", "reader"), name
    assert {"parser", "cluster-controller-gateway", "search-server", "resource-allocator",
            "failure-notifier", "templates-registry"} <= expected["policies-system"]
    assert len(set(tokens.values())) == len(tokens), "a token each"
    for runtime, (key, _) in RUNTIMES.items():
        pod = pod_spec(deployment(output, runtime))
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        [mount] = pod["containers"][0]["volumeMounts"]
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["secret"]["secretName"] == "aios-policy-runtime-tokens-file"
        assert env["AIOS_TOKENS_FILE"]["value"] == f"{mount['mountPath']}/{key}"


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


# What a role may do at a runtime, and what is beyond it: (method, path, body) each.
PUBLISH = {"name": "aiosv1.policies.wiring-probe", "version": "v1",
           "code": "class AIOSv1PolicyRule:\n    pass\n"}
ROLE_PROBES = {
    ("policies-system", "reader"): (("GET", "/policies", None), ("POST", "/policies", PUBLISH)),
    ("policies-system", "executor"): (
        ("POST", "/policies/aiosv1.policies.absent:v1/eval", {"input_data": {}}),
        ("GET", "/policies", None)),
    ("clusters-db", "reader"): (("POST", "/clusters/query", {"query": {}}),
                                ("DELETE", "/clusters/absent", None)),
    ("clusters-db", "operator"): (("DELETE", "/clusters/absent", None),
                                  ("GET", "/tokens", None)),
}


def check_component_tokens(output: dict[str, Path], runtime: str, url: str) -> None:
    """Each component's rendered token at the runtime started with the rendered tokens
    file: accepted with the role the file gives it, refused beyond that role (naming it),
    and unknown (401) when the file does not list it."""
    listed = tokens_files(output)[runtime]
    for component, token in component_tokens(output).items():
        headers = {"Authorization": f"Bearer {token}"}
        if component not in listed:
            assert httpx.get(f"{url}/policies", headers=headers).status_code == 401, component
            continue
        role = listed[component]["role"]
        allowed, beyond = ROLE_PROBES[runtime, role]
        for (method, path, body), refused in ((allowed, False), (beyond, True)):
            answer = httpx.request(method, f"{url}{path}", headers=headers, json=body)
            where = f"{component} ({role}) {method} {path} at {runtime}: {answer.text}"
            if refused:
                assert answer.status_code == 403, where
                assert f"token {component!r} (role {role}" in answer.json()["detail"], where
            else:
                assert answer.status_code not in (401, 403), where


@pytest.mark.parametrize("name", sorted(OUR_IMAGES))
def test_our_images_become_ready_with_the_rendered_configuration(
    output: dict[str, Path], stand_ins: dict[str, str], tmp_path: Path, name: str,
) -> None:
    manifest = deployment(output, name)
    namespace = manifest["metadata"]["namespace"]
    pod = pod_spec(manifest)
    image_env, entrypoint = image_config(OUR_IMAGES[name])
    mounts = {v["name"]: tmp_path / v["name"] for v in pod.get("volumes", [])}
    for volume in pod.get("volumes", []):  # a Secret's keys are the files of its volume
        if "secret" in volume:
            mounts[volume["name"]].mkdir()
            secret = volume["secret"]["secretName"]
            for manifest in objects(output):
                if (manifest["kind"], manifest["metadata"].get("namespace"),
                        manifest["metadata"]["name"]) == ("Secret", namespace, secret):
                    for key, value in manifest["stringData"].items():
                        (mounts[volume["name"]] / key).write_text(value)
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
            if name in RUNTIMES:
                check_component_tokens(output, name, url.removesuffix(probe["path"]))
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


# --- the cluster's controller (playbooks/onboard_cluster.yml) ----------------------------

SEED_CLUSTER = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json")
                          .read_text())
CONTROLLER_ID = SEED_CLUSTER["id"]
ALLOW_ALL_POLICY = ("class AIOSv1PolicyRule:\n"
                    "    def __init__(self, rule_id, settings, parameters):\n"
                    "        self.rule_id = rule_id\n\n"
                    "    def eval(self, parameters, input_data, context):\n"
                    "        return {'allowed': True, 'input_data': input_data}\n")


@pytest.fixture(scope="module")
def controller_output(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The rendered controller of the seed's cluster: {"cluster_onboarding": folder}."""
    directory = tmp_path_factory.mktemp("controller")
    config = {k: SEED_CLUSTER[k] for k in ("id", "regionId", "config", "tags", "clusterMetadata")}
    done = render_site(directory, {
        "aios_public_address": PUBLIC_ADDRESS, "cluster_onboarding_config": config,
        "cluster_onboarding_nodes_from": "file",
        "cluster_onboarding_nodes_file": str(REPO / "tests" / "unit" / "fixtures"
                                             / "kubectl_get_nodes.json"),
        "cluster_onboarding_dest": str(directory / "documents"),
    }, playbook="onboard_cluster.yml")
    assert done.returncode == 0, done.stdout[-3000:]
    return {"cluster_onboarding": directory / "cluster_onboarding"}


def start_process(command: list[str], env: dict[str, str], url: str, log: Path,
                  cwd: Path) -> subprocess.Popen:
    """Start ``command`` and wait until ``url`` answers 200 (AssertionError with its log)."""
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out,
                                   stderr=subprocess.STDOUT)
    status, deadline = None, time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            status = httpx.get(url, timeout=2).status_code
        except httpx.TransportError:
            status = None
        if status == 200:
            return process
        time.sleep(0.3)
    stop_process(process)
    raise AssertionError(f"not ready at {url} (last status {status}, exit {process.poll()}): "
                         f"{log.read_text()[-3000:]}")


def stop_process(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_the_controller_output_is_complete_and_holds_no_admin_token(
    controller_output: dict[str, Path],
) -> None:
    folder = controller_output["cluster_onboarding"]
    kinds = {(m["kind"], m["metadata"]["name"]) for m in manifests(folder).values()}
    name = f"{CONTROLLER_ID}-controller"
    assert kinds == {("Namespace", "controllers"), ("Deployment", name),
                     ("Service", f"{name}-svc"), ("Secret", f"{name}-tokens")}
    # every Secret key, namespace and selected pod it refers to is in the folder
    test_the_output_applies_in_order_with_nothing_missing(controller_output)
    assert (folder / f"secret-{name}-tokens.yaml").stat().st_mode & 0o777 == 0o600
    manifest = deployment(controller_output, name)
    [container] = pod_spec(manifest)["containers"]
    assert container["name"] == "policy-runtime"  # what policy_execution_mode switches
    env = {e["name"]: e for e in container["env"]}
    assert not set(env) - settings_names("policies-system")
    assert "AIOS_API_TOKEN" not in env and "AIOS_API_TOKEN_FILE" not in env
    assert env["AIOS_SCOPED_TOKENS_ONLY"]["value"] == "true"
    assert env["AIOS_RUN_MODES"]["value"] == "controller"
    assert env["AIOS_CLUSTER_ID"]["value"] == CONTROLLER_ID
    assert env["AIOS_REMOTE_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{name}-tokens", "key": "remote-token"}
    secrets_used = {e["valueFrom"]["secretKeyRef"]["name"] for e in env.values()
                    if "valueFrom" in e}
    assert secrets_used == {f"{name}-tokens"}, "the runtime's admin token Secret is not used"
    assert urlsplit(env["AIOS_POLICIES_URL"]["value"]).hostname == PUBLIC_ADDRESS
    service = next(m for m in manifests(folder).values() if m["kind"] == "Service")
    assert service["spec"]["ports"][0]["port"] == int(env["AIOS_PORT"]["value"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    readme = (folder.parent / "README.md").read_text()
    assert f"--cluster {CONTROLLER_ID} --token-from-stdin" in readme
    defaults = yaml.safe_load((REPO / "roles" / "cluster_onboarding" / "defaults" / "main.yml")
                              .read_text())
    for variable, fact in defaults["_cluster_onboarding_controller_wiring"].items():
        assert set(fact) <= WIRING_KEYS, variable
        assert fact.get("meaning") and (REPO / fact["file"]).is_file(), variable
    assert set(env) <= set(defaults["_cluster_onboarding_controller_wiring"])


def test_the_controller_runs_with_its_scoped_tokens_only(
    controller_output: dict[str, Path], stand_ins: dict[str, str], tmp_path: Path,
) -> None:
    """The rendered controller, started as its container would be: ready; its cluster-owner
    token governs its own cluster and nothing else; its executor token runs its remote
    pre-checks on the policies system; no admin token works at it."""
    name = f"{CONTROLLER_ID}-controller"
    manifest = deployment(controller_output, name)
    [container] = pod_spec(manifest)["containers"]
    tokens = {key: rendered_secret(controller_output, "controllers", f"{name}-tokens", key)
              for key in ("remote-token", "owner-token")}
    mongo = f"mongodb://127.0.0.1:{stand_ins['mongo_port']}/?directConnection=true"

    # The policies system, with an executor at an allowed host (itself).
    admin = secrets.token_urlsafe(32)
    policies_port = free_port()
    policies_url = f"http://127.0.0.1:{policies_port}"
    base_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    policies = start_process(
        [sys.executable, "-m", "policy_runtime", "serve", "--port", str(policies_port)],
        {**base_env, "AIOS_API_TOKEN": admin, "AIOS_RUN_MODES": "policies",
         "AIOS_MONGO_URI": mongo, "AIOS_DB_NAME": "policies", "AIOS_POOL_SIZE": "1",
         "AIOS_EXECUTOR_ALLOWED_HOSTS": "127.0.0.1"},
        f"{policies_url}/healthz", tmp_path / "policies.log", tmp_path)
    controller = None
    try:
        as_admin = {"Authorization": f"Bearer {admin}"}
        uri = httpx.post(f"{policies_url}/policies", headers=as_admin, json={
            "name": "aiosv1.policies.controller-wiring", "version": "v1",
            "code": ALLOW_ALL_POLICY}).json()["policy_rule_uri"]
        registered = httpx.post(f"{policies_url}/executors", headers=as_admin,
                                json={"id": "executor-001", "url": policies_url})
        assert registered.status_code == 201, registered.text

        # Register the rendered tokens as the render directory's README says.
        for key, database, args in (
            ("remote-token", "policies", ["--role", "executor"]),
            ("owner-token", "clusters", ["--role", "cluster-owner", "--cluster", CONTROLLER_ID]),
        ):
            token_name = "controller-" + CONTROLLER_ID + ("-owner" if key == "owner-token" else "")
            made = subprocess.run(
                [sys.executable, "-m", "policy_runtime", "token", "create", token_name, *args,
                 "--token-from-stdin"], input=tokens[key] + "\n", capture_output=True, text=True,
                env={**base_env, "AIOS_MONGO_URI": mongo, "AIOS_DB_NAME": database},
                timeout=60, check=False)
            assert made.returncode == 0, made.stderr

        # The controller, with exactly its rendered env (addresses mapped to this host).
        image_env, entrypoint = image_config(OUR_IMAGES["policies-system"])
        ports = {str(p["containerPort"]): str(free_port()) for p in container["ports"]}
        mapping = (ports, {}, stand_ins)
        env = {**base_env, **{k: local(v, *mapping) for k, v in image_env.items() if k != "PATH"}}
        for variable in container["env"]:
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            value = tokens[ref["key"]] if ref else variable["value"]
            env[variable["name"]] = local(value, *mapping)
        assert env["AIOS_POLICIES_URL"] == f"http://{PUBLIC_ADDRESS}:30102"
        env["AIOS_POLICIES_URL"] = policies_url  # the management cluster's NodePort
        probe = container["readinessProbe"]["httpGet"]
        url = f"http://127.0.0.1:{ports[str(probe['port'])]}"
        command = container.get("command", entrypoint) + container.get("args", [])
        controller = start_process([str(Path(sys.executable).parent / command[0]), *command[1:]],
                                   env, f"{url}{probe['path']}", tmp_path / "controller.log",
                                   tmp_path)

        owner = {"Authorization": f"Bearer {tokens['owner-token']}"}
        for admin_only in ("/tokens", "/audit"):
            refused = httpx.get(f"{url}{admin_only}", headers=owner)
            assert refused.status_code == 403, refused.text
            assert "tokens:manage" in refused.json()["detail"]
        # its executor is the controller's POLICY_SYSTEM_EXECUTOR_ID
        cluster = {**SEED_CLUSTER, "config": {**SEED_CLUSTER["config"], "policyExecutorId": ""}}
        created = httpx.post(f"{url}/clusters/create", headers=owner, json=cluster)
        assert created.is_success, created.text
        read = httpx.get(f"{url}/clusters/read/{CONTROLLER_ID}", headers=owner)
        assert read.status_code == 200, read.text
        own_map = httpx.get(f"{url}/pre-check-policies", headers=owner)
        assert own_map.status_code == 200 and own_map.json()["cluster_id"] == CONTROLLER_ID
        foreign = httpx.get(f"{url}/pre-check-policies", headers=owner,
                            params={"cluster_id": "another-cluster"})
        assert foreign.status_code == 403, foreign.text
        mapped = httpx.post(f"{url}/pre-check-policies/update", headers=owner,
                            json={"add_node": uri})
        assert mapped.status_code == 200, mapped.text
        decided = httpx.post(f"{url}/pre-check/add_node", headers=owner, json={"id": "n-1"})
        assert decided.status_code == 200, decided.text
        assert decided.json()["allowed"] is True, decided.json()["reason"]
        assert decided.json()["policy_rule_uri"] == uri
        # No admin token works at the controller: not the network's, not its executor token.
        for other in (admin, tokens["remote-token"]):
            assert httpx.get(f"{url}/pre-check-policies",
                             headers={"Authorization": f"Bearer {other}"}).status_code == 401
    finally:
        if controller is not None:
            stop_process(controller)
        stop_process(policies)


def test_a_live_onboarding_deploys_the_controller_with_tokens_of_its_own(
    runtime: tuple[str, str], kube, tmp_path: Path,
) -> None:
    """onboard_cluster.yml against the network (a runtime) and a real control plane: the
    controller gets an executor and a cluster-owner token made for it, kept in its Secret;
    a second run changes nothing; a lost Secret gets new tokens and the old are revoked."""
    from render_site import run_playbook

    url, admin = runtime
    cluster_id = f"live-{secrets.token_hex(3)}"
    for node in json.loads((REPO / "tests" / "unit" / "fixtures" / "kubectl_get_nodes.json")
                           .read_text())["items"]:
        kube.add(node)
    config = {**{k: SEED_CLUSTER[k] for k in ("regionId", "config", "tags", "clusterMetadata")},
              "id": cluster_id}
    variables = {"cluster_onboarding_config": config, "aios_onboard": True,
                 "cluster_onboarding_dest": str(tmp_path / "documents"),
                 "cluster_onboarding_api_url": url, "cluster_onboarding_api_token": admin,
                 "aios_kubeconfig": str(kube.kubeconfig), "ansible_connection": "local"}
    name = f"{cluster_id}-controller"

    def onboard() -> str:
        done = run_playbook("onboard_cluster.yml", variables)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert admin not in done.stdout
        return done.stdout

    def kept_tokens() -> dict[str, str]:
        secret = kube.get("Secret", f"{name}-tokens", "controllers")
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}

    first = onboard()
    assert f"Deployment controllers/{name}" in first
    tokens = kept_tokens()
    assert set(tokens) == {"remote-token", "owner-token"}
    assert not {tokens["remote-token"], tokens["owner-token"]} & set(first.split())
    records = {r["name"]: r for r in httpx.get(f"{url}/tokens", headers={
        "Authorization": f"Bearer {admin}"}).json()}
    assert records[f"controller-{cluster_id}"]["role"] == "executor"
    owner_record = records[f"controller-{cluster_id}-owner"]
    assert (owner_record["role"], owner_record["clusters"]) == ("cluster-owner", [cluster_id])
    owner = {"Authorization": f"Bearer {tokens['owner-token']}"}
    executor = {"Authorization": f"Bearer {tokens['remote-token']}"}
    assert httpx.get(f"{url}/clusters/{cluster_id}", headers=owner).status_code == 200
    assert httpx.get(f"{url}/tokens", headers=owner).status_code == 403
    assert httpx.get(f"{url}/clusters/{cluster_id}", headers=executor).status_code == 403
    absent = httpx.post(f"{url}/policies/aiosv1.policies.absent:v1/eval", headers=executor,
                        json={"input_data": {}})
    assert absent.status_code == 404, absent.text  # allowed to evaluate; no such policy
    live = kube.get("Deployment", name, "controllers")
    [container] = live["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AIOS_CLUSTER_ID"]["value"] == cluster_id and "AIOS_API_TOKEN" not in env
    assert env["AIOS_POLICIES_URL"]["value"] == url
    assert live["status"].get("readyReplicas") == 1

    again = onboard()
    assert re.search(r"^localhost\s+: ok=\d+\s+changed=0\s", again, re.M), again[-3000:]
    assert kept_tokens() == tokens

    kube.delete("Secret", f"{name}-tokens", "controllers")
    onboard()
    renewed = kept_tokens()
    assert renewed["remote-token"] != tokens["remote-token"]
    assert renewed["owner-token"] != tokens["owner-token"]
    deadline = time.monotonic() + 10  # token lookups are cached for up to a second
    while (httpx.get(f"{url}/clusters/{cluster_id}", headers=owner).status_code != 401
           and time.monotonic() < deadline):
        time.sleep(0.2)
    assert httpx.get(f"{url}/clusters/{cluster_id}", headers=owner).status_code == 401
    assert httpx.get(f"{url}/clusters/{cluster_id}", headers={
        "Authorization": f"Bearer {renewed['owner-token']}"}).status_code == 200

    # The controller is what the policy_execution_mode module switches.
    from conftest import run_collection_module

    switched = run_collection_module(
        REPO / "plugins" / "modules" / "policy_execution_mode.py",
        {"cluster_id": cluster_id, "mode": "local", "kubeconfig": str(kube.kubeconfig)})
    assert switched["changed"] is True, switched
    container = kube.get("Deployment", name, "controllers")["spec"]["template"]["spec"][
        "containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["POLICY_EXECUTION_MODE"] == "local" and not env.get("POLICY_SYSTEM_EXECUTOR_ID")
    assert env["AIOS_CLUSTER_ID"] == cluster_id


def test_the_executor_id_the_services_send_is_answered_by_the_policies_system(
    output: dict[str, Path],
) -> None:
    """The utils and core services post remote decisions to /executor/<their executor
    id>/execute_policy; with no executor of that id registered, policies-system must answer
    it itself (AIOS_LOCAL_EXECUTOR_IDS), or every such decision would be a 404."""
    from policy_runtime.config import Settings

    def env(name: str) -> dict[str, str | None]:
        container = pod_spec(deployment(output, name))["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    sent = {env(name)["POLICY_SYSTEM_EXECUTOR_ID"]
            for name in ("resource-allocator", "search-server", "failure-notifier")}
    answered = Settings(local_executor_ids=env("policies-system")["AIOS_LOCAL_EXECUTOR_IDS"])
    assert sent == {"executor-001"} and set(answered.local_executor_ids) == sent


def test_allowed_hosts_reach_the_policies_system(
    output: dict[str, Path], tmp_path: Path,
) -> None:
    """policy_runtime_executor_allowed_hosts and policy_runtime_archive_allowed_hosts become
    policies-system's allow-lists; by default there are none, so the runtime refuses every
    executor and every code URL, naming the setting."""
    from policy_runtime.config import Settings
    from policy_runtime.executors.allowlist import AllowList, UrlNotAllowed

    lists = {  # role variable -> (runtime variable, Settings field)
        "policy_runtime_executor_allowed_hosts": (
            "AIOS_EXECUTOR_ALLOWED_HOSTS", "executor_allowed_hosts"),
        "policy_runtime_archive_allowed_hosts": (
            "AIOS_POLICY_ARCHIVE_ALLOWED_HOSTS", "policy_archive_allowed_hosts"),
    }

    def rendered_env(parts: dict[str, Path]) -> dict[str, str | None]:
        container = pod_spec(deployment(parts, "policies-system"))["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    for variable, field in lists.values():
        assert rendered_env(output).get(variable) is None
        with pytest.raises(UrlNotAllowed, match=variable):
            AllowList(getattr(Settings(), field), setting=variable).check_url(
                "http://executor.example:8000")
    hosts = [".executors.svc.cluster.local", "10.20.0.0/16"]
    done = render_site(tmp_path, {"aios_public_address": PUBLIC_ADDRESS,
                                  "aios_components": ["registries"],
                                  **dict.fromkeys(lists, hosts)})
    assert done.returncode == 0, done.stdout[-3000:]
    env = rendered_env({"registries": tmp_path / "registries"})
    for variable, field in lists.values():
        assert env[variable] == ".executors.svc.cluster.local,10.20.0.0/16"
        allow = AllowList(getattr(Settings(**{field: env[variable]}), field))
        allow.check_url("http://policy-executor.executors.svc.cluster.local:10000")
        allow.check_url("http://10.20.3.4:10000")
        for refused in ("http://executor.example:8000", "http://169.254.169.254/latest"):
            with pytest.raises(UrlNotAllowed):
                allow.check_url(refused)
