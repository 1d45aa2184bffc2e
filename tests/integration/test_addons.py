"""playbooks/addons.yml: upstream's five add-ons rendered strictly valid and wired, applied to a
real control plane, registered with the network once ready and deregistered on removal."""

from __future__ import annotations

import base64
import json
import re
import secrets
import signal
import threading
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml
from control_plane import ControlPlane
from render_site import REPO, manifests, render_site
from test_addon_registration import StandInRegistries, start_runtime
from test_apply_mode import playbook, seed
from test_render import KUBERNETES_VERSIONS, assert_strictly_valid
from test_render import test_every_container_is_hardened as assert_hardened
from test_wiring import WIRING_KEYS
from test_wiring import test_the_output_applies_in_order_with_nothing_missing as assert_complete

PUBLIC = {"cluster_addons_public_address": "192.0.2.10", "aios_public_address": "198.51.100.1"}
# Upstream's ports: (Service, port, NodePort) (k8s/installer/addons/*, the onboarding guide).
ADDON_PORTS = {
    ("container-registry", 5000, 31280),
    ("assets-registry", 4000, 31700),
    ("assets-db", 27017, None),
    ("assets-storage", 9000, None),
    ("assets-storage", 9001, None),
    ("policy-executor", 10250, 30900),
    ("policy-executor-db", 27017, None),
    ("split-runner-service", 5000, 31701),
    ("inference-server", 50052, 31500),
    ("inference-server", 20000, 31501),
    ("inference-redis", 6379, 31300),
}
SECRETS = [
    "assets-storage-credentials",
    "inference-logs-db-credentials",
    "policy-executor-db",
    "policy-executor-source-token",
    "policy-executor-token",
]
URL = re.compile(
    r"(?P<name>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc\.cluster\.local:(?P<port>\d+)"
)


def render(directory: Path, extra: dict | None = None) -> dict[str, dict]:
    done = render_site(directory, {**PUBLIC, **(extra or {})}, playbook="addons.yml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests(directory).values()}


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    directory = tmp_path_factory.mktemp("addons")
    return directory, render(directory)


def env_of(rendered: dict[str, dict], name: str, container: int = 0) -> dict[str, object]:
    spec = rendered[f"Deployment/{name}"]["spec"]["template"]["spec"]["containers"][container]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in spec.get("env", [])}


def secret_ref(name: str, key: str) -> dict:
    return {"secretKeyRef": {"name": name, "key": key}}


def test_the_executor_reads_its_token_from_the_mounted_secret(output, tmp_path: Path) -> None:
    """The token Secrets are read-only files of the executor, not environment variables;
    the rendered environment, run as a real runtime, serves that token and no other (and
    starts only with its policy source's token file there)."""
    from policy_runtime.embedded_db import EmbeddedDatabase

    pod = output[1]["Deployment/policy-executor"]["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "secret-1", "secret": {
            "secretName": "policy-executor-token", "defaultMode": 0o440}},
        {"name": "secret-2", "secret": {
            "secretName": "policy-executor-source-token", "defaultMode": 0o440}},
    ]
    assert pod["containers"][0]["volumeMounts"] == [
        {"name": "secret-1", "mountPath": "/var/run/secrets/aios", "readOnly": True},
        {"name": "secret-2", "mountPath": "/var/run/secrets/aios-source", "readOnly": True},
    ]
    assert pod["securityContext"]["fsGroup"] == pod["containers"][0]["securityContext"][
        "runAsUser"], "the container's user reads the 0440 file through the pod's group"
    token = secrets.token_urlsafe(16)
    mounted = tmp_path / "secret"
    mounted.mkdir()
    (mounted / "token").write_text(token + "\n")  # as kubectl create secret --from-file
    rendered = env_of(output[1], "policy-executor")
    plain = {name: value for name, value in rendered.items() if isinstance(value, str)}
    database = EmbeddedDatabase(tmp_path / "db").start()
    source_mounted = tmp_path / "source-secret"
    source_mounted.mkdir()
    (source_mounted / "token").write_text(secrets.token_urlsafe(16) + "\n")
    assert plain["AIOS_POLICY_SOURCE_TOKEN_FILE"] == "/var/run/secrets/aios-source/token"
    plain.update(AIOS_API_TOKEN_FILE=str(mounted / "token"), AIOS_MONGO_URI=database.uri,
                 AIOS_HOST="127.0.0.1",
                 AIOS_POLICY_SOURCE_TOKEN_FILE=str(source_mounted / "token"))
    plain.pop("AIOS_PORT")  # start_runtime picks a free one
    proc, url = start_runtime(tmp_path, "executor", plain)
    try:
        good = httpx.get(f"{url}/executors", headers={"Authorization": f"Bearer {token}"})
        bad = httpx.get(f"{url}/executors", headers={"Authorization": "Bearer not-it"})
        assert (good.status_code, bad.status_code) == (200, 401), good.text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        database.stop()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_addon_manifest_is_strictly_valid(output, version: str) -> None:
    assert_strictly_valid(output[1], version)


def test_the_five_addons_are_upstreams(output) -> None:
    directory, rendered = output
    deployments = [
        "container-registry",
        "assets-registry",
        "assets-db",
        "assets-storage",
        "policy-executor",
        "policy-executor-db",
        "model-splitter",
        "inference-server",
        "inference-redis",
    ]
    claims = ["container-registry", "assets-db", "assets-storage", "policy-executor-db"]
    assert sorted(rendered) == sorted(
        [f"Deployment/{name}" for name in deployments]
        + sorted({f"Service/{s}" for s, _, _ in ADDON_PORTS})
        + [f"PersistentVolumeClaim/{name}-data" for name in claims]
        + [f"Secret/{name}" for name in SECRETS]
        + ["Namespace/aios-addons", "Job/assets-storage-bucket"]
    )
    ports = {
        (m["metadata"]["name"], p["port"], p.get("nodePort"))
        for m in rendered.values()
        if m["kind"] == "Service"
        for p in m["spec"]["ports"]
    }
    assert ports == ADDON_PORTS
    assert_hardened({Path(k): m for k, m in rendered.items()})
    images = {
        name: rendered[f"Deployment/{name}"]["spec"]["template"]["spec"]["containers"][0]["image"]
        for name in deployments
    }
    assert images["container-registry"].startswith("docker.io/library/registry:2")
    assert images["assets-registry"] == "docker.io/aiosv1/assets-registry:v1"
    assert images["model-splitter"] == "docker.io/aiosv1/split-executor:v1"
    assert images["inference-server"] == "docker.io/aiosv1/inference-server:v1"
    assert images["policy-executor"].startswith("docker.io/aiosv1/aios-policy-runtime:")
    assert not any("triton" in key for key in rendered)
    # Every Secret, claim and selector a pod needs is in the output, Namespace first.
    assert_complete({"cluster_addons": directory})


def test_the_addons_are_wired_as_their_code_reads(output) -> None:
    rendered = output[1]
    assert env_of(rendered, "assets-registry") == {
        "MONGO_URL": "mongodb://assets-db.aios-addons.svc.cluster.local:27017",
        "AWS_ACCESS_KEY_ID": secret_ref("assets-storage-credentials", "access_key"),
        "AWS_SECRET_ACCESS_KEY": secret_ref("assets-storage-credentials", "secret_key"),
        "S3_ENDPOINT_URL": "http://assets-storage.aios-addons.svc.cluster.local:9000",
        "AWS_REGION": "us-east-1",
        "S3_BUCKET_NAME": "aios-assets",
        "PUBLIC_URL": "http://192.0.2.10:31700",
    }
    assert env_of(rendered, "assets-storage") == {
        "MINIO_ROOT_USER": secret_ref("assets-storage-credentials", "access_key"),
        "MINIO_ROOT_PASSWORD": secret_ref("assets-storage-credentials", "secret_key"),
    }
    assert env_of(rendered, "policy-executor") == {
        "AIOS_RUN_MODES": "policies",
        "AIOS_HOST": "0.0.0.0",
        "AIOS_PORT": "10250",
        "AIOS_MONGO_URI": secret_ref("policy-executor-db", "uri"),
        "AIOS_DB_NAME": "policies",
        "AIOS_API_TOKEN_FILE": "/var/run/secrets/aios/token",
        # its own database has none of the network's policies: it reads them from there
        "AIOS_POLICY_SOURCE_URL": "http://198.51.100.1:30102",
        "AIOS_POLICY_SOURCE_TOKEN_FILE": "/var/run/secrets/aios-source/token",
    }
    assert env_of(rendered, "model-splitter") == {
        "TASK_DB_STATUS_UPDATE_URL": "http://198.51.100.1:30108",
        "MODEL_LAYERS_REGISTRY_URL": "http://198.51.100.1:30110",
        "BLOCK_DB_URL": "http://198.51.100.1:30100",
        "GLOBAL_TASKS_DB_URL": "http://198.51.100.1:30108",
    }
    assert env_of(rendered, "inference-server") == {
        "ADHOC_INSTANCE_ID": "inference-server-1",
        "INFERENCE_REDIS_HOST": "192.0.2.10",
        "INFERENCE_REDIS_PORT": "31300",
        "INCLUSTER_REDIS_HOST": "inference-redis.aios-addons.svc.cluster.local",
        "IN_CLUSTER_REDIS_PORT": "6379",
        "INFERENCE_REDIS_INTERNAL_URL": "inference-redis.aios-addons.svc.cluster.local",
        "DISCOVERY_MODE": "gateway",
        "BLOCKS_DB_URL": "http://198.51.100.1:30100",
        "SEARCH_SERVER_API_URL": "http://198.51.100.1:30150",
        "DB_PASSWORD": secret_ref("inference-logs-db-credentials", "password"),
    }
    # In-cluster URLs name rendered Services and their ports.
    services = {
        m["metadata"]["name"]: [p["port"] for p in m["spec"]["ports"]]
        for m in rendered.values()
        if m["kind"] == "Service"
    }
    found = [
        (u["name"], int(u["port"]))
        for m in rendered.values()
        if m["kind"] == "Deployment"
        for c in m["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        for u in URL.finditer(str(e.get("value", "")))
    ]
    assert sorted(found) == [("assets-db", 27017), ("assets-storage", 9000)]
    assert all(port in services.get(name, []) for name, port in found)
    assert 6379 in services["inference-redis"]
    # The database URI and every credential are in Secrets, never in plain env.
    assert (
        "mongodb://policy-executor-db.aios-addons.svc.cluster.local:27017/?directConnection=true"
        == (rendered["Secret/policy-executor-db"]["stringData"]["uri"])
    )


def test_the_assets_bucket_is_made_by_a_setup_job_with_the_keys_as_files(output) -> None:
    """Upstream's assets registry never creates its bucket: a Job makes it in MinIO, with the
    keys read from the generated Secret's files (no environment), and is idempotent."""
    job = output[1]["Job/assets-storage-bucket"]
    assert job["metadata"]["namespace"] == "aios-addons"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "cluster_addons"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "OnFailure" and job["spec"]["backoffLimit"] == 10
    (container,) = pod["containers"]
    assert container["image"].startswith("quay.io/minio/mc:RELEASE.")
    assert "env" not in container and "envFrom" not in container
    script, name, endpoint, bucket = container["args"]
    assert container["command"] == ["sh", "-c"] and name == "assets-storage-bucket"
    assert endpoint == "http://assets-storage.aios-addons.svc.cluster.local:9000"
    assert bucket == "aios-assets"
    # Idempotent: an existing bucket is left as it is.
    assert 'mb --ignore-existing "assets/$2"' in script
    assert "/credentials/access_key" in script and "/credentials/secret_key" in script
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    credentials = volumes[mounts["/credentials"]["name"]]["secret"]
    assert credentials == {"secretName": "assets-storage-credentials", "defaultMode": 0o440}
    assert mounts["/credentials"]["readOnly"] is True
    secret = output[1]["Secret/assets-storage-credentials"]["stringData"]
    assert {"access_key", "secret_key"} <= set(secret)
    assert container["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"]
    assert not any(value in json.dumps(job) for value in secret.values())


def test_a_setup_job_given_environment_is_refused(tmp_path: Path) -> None:
    """Credentials reach a setup job as files only: a job row that sets a variable fails
    the render, naming the row, before anything is written."""
    defaults = yaml.safe_load(
        (REPO / "roles" / "cluster_addons" / "defaults" / "main.yml").read_text()
    )
    rows = defaults["cluster_addons_components"]
    job = next(row for row in rows if "job" in row)
    leaky = {**job, "secret_env": {"AWS_SECRET_ACCESS_KEY": {"secret": "x", "key": "y"}}}
    table = [leaky if row is job else row for row in rows]
    chosen = {"cluster_addons_components": table, "cluster_addons_enabled": ["assets-registry"]}
    done = render_site(tmp_path, {**PUBLIC, **chosen}, playbook="addons.yml")
    assert done.returncode != 0
    assert "assets-storage-bucket: a setup job reads no environment" in done.stdout
    assert not list(tmp_path.rglob("*.yaml"))


def test_the_wiring_table_covers_every_addon_container() -> None:
    defaults = yaml.safe_load(
        (REPO / "roles" / "cluster_addons" / "defaults" / "main.yml").read_text()
    )
    for row in defaults["cluster_addons_components"]:
        containers = [row["name"]] + [s["name"] for s in row.get("sidecars", [])]
        assert sorted(row.get("wiring", {})) == sorted(containers), row["name"]
        for container, reads in row["wiring"].items():
            for name, fact in reads.items():
                where = f"{row['name']}/{container}: {name}"
                assert set(fact) <= WIRING_KEYS, where
                assert fact.get("meaning") and fact.get("file"), where
                if fact["file"].startswith("policy_runtime/"):
                    assert (REPO / fact["file"]).is_file(), where


def test_storage_logging_triton_and_an_external_executor_db_are_settings(tmp_path: Path) -> None:
    rendered = render(
        tmp_path / "a",
        {
            "cluster_addons_enabled": [
                "assets-registry",
                "policy-executor",
                "inference-server",
                "triton",
            ],
            "cluster_addons_assets_storage": "external",
            "cluster_addons_assets_s3_endpoint": "https://rgw.example:7480",
            "cluster_addons_assets_access_key": "ceph-user-key",
            "cluster_addons_assets_secret_key": "ceph-secret-key-value",
            "cluster_addons_executor_mongo_uri": "mongodb://user:pw-in-secret@db.example:27017/",
            "cluster_addons_inference_logging": True,
            "cluster_addons_assets_db_size": "20Gi",
        },
    )
    assert (
        "Deployment/assets-storage" not in rendered
        and "Job/assets-storage-bucket" not in rendered
        and "Deployment/policy-executor-db" not in rendered
    )
    assert env_of(rendered, "assets-registry")["S3_ENDPOINT_URL"] == "https://rgw.example:7480"
    assert rendered["Secret/assets-storage-credentials"]["stringData"] == {
        "access_key": "ceph-user-key",
        "secret_key": "ceph-secret-key-value",
    }
    assert rendered["Secret/policy-executor-db"]["stringData"]["uri"].endswith("@db.example:27017/")
    # On the policies system's database the executor has every policy: no source to read.
    assert not {"AIOS_POLICY_SOURCE_URL", "AIOS_POLICY_SOURCE_TOKEN_FILE"} & set(
        env_of(rendered, "policy-executor"))
    assert rendered["PersistentVolumeClaim/assets-db-data"]["spec"]["resources"] == {
        "requests": {"storage": "20Gi"}
    }
    logging = env_of(rendered, "inference-server")
    assert {k: logging[k] for k in ("DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")} == {
        "DB_HOST": "inference-logs-db.aios-addons.svc.cluster.local",
        "DB_PORT": "5432",
        "DB_NAME": "logging",
        "DB_USER": "aios",
        "DB_PASSWORD": secret_ref("inference-logs-db-credentials", "password"),
    }
    assert env_of(rendered, "inference-logs-db")["POSTGRES_PASSWORD"] == secret_ref(
        "inference-logs-db-credentials", "password"
    )
    triton = rendered["Deployment/triton-inference-server"]["spec"]["template"]["spec"]
    assert triton["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    for version in KUBERNETES_VERSIONS:
        assert_strictly_valid(rendered, version)

    unknown = render_site(
        tmp_path / "b", {**PUBLIC, "cluster_addons_enabled": ["jupyter"]}, playbook="addons.yml"
    )
    assert unknown.returncode != 0 and "no row for: ['jupyter']" in unknown.stdout
    no_endpoint = render_site(
        tmp_path / "c",
        {**PUBLIC, "cluster_addons_assets_storage": "external"},
        playbook="addons.yml",
    )
    assert no_endpoint.returncode != 0 and "cluster_addons_assets_s3_endpoint" in no_endpoint.stdout
    no_address = render_site(
        tmp_path / "d", {"aios_public_address": "198.51.100.1"}, playbook="addons.yml"
    )
    assert no_address.returncode != 0 and "cluster_addons_public_address" in no_address.stdout


# --- a live cluster ------------------------------------------------------------------------


@pytest.fixture()
def network(tmp_path: Path) -> Iterator[dict]:
    """Stand-ins of the network's registries and its real policies system."""
    from policy_runtime.embedded_db import EmbeddedDatabase

    StandInRegistries.documents = {}
    StandInRegistries.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInRegistries)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    database = EmbeddedDatabase(tmp_path / "db").start()
    admin = secrets.token_urlsafe(16)
    proc, url = start_runtime(
        tmp_path,
        "policies-system",
        {
            "AIOS_MONGO_URI": database.uri,
            "AIOS_API_TOKEN": admin,
            "AIOS_EXECUTOR_ALLOWED_HOSTS": "127.0.0.1",
        },
    )
    registries = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield {"registries": registries, "policies": url, "admin": admin, "db": database.uri}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        database.stop()
        server.shutdown()
        server.server_close()


def test_live_addons_are_registered_when_ready_and_deregistered_on_removal(
    kube: ControlPlane, network: dict
) -> None:
    """The fixture's nodes run no containers (kwok), so the executor shares the policies
    system's database (no token to hand over in its pod); the live install registers each
    add-on once it is ready, a second run changes nothing, state=absent undoes both."""
    seed(kube, "nodes_good.yml")
    registries = network["registries"]
    chosen = {
        "cluster_addons_public_address": "127.0.0.1",
        "aios_public_address": "198.51.100.1",
        "cluster_addons_register": True,
        "cluster_addons_cluster_id": "west-1",
        # The container registry registers as the others do (test_addon_registration.py).
        "cluster_addons_enabled": [
            "assets-registry",
            "policy-executor",
            "inference-server",
            "model-splitter",
        ],
        "cluster_addons_executor_mongo_uri": network["db"],
        "cluster_addons_policies_api_token": network["admin"],
        "cluster_addons_network_urls": {
            "blocks_db": "http://198.51.100.1:30100",
            "tasks_db": "http://198.51.100.1:30108",
            "layers_registry": "http://198.51.100.1:30110",
            "search_server": "http://198.51.100.1:30150",
            "policies_system": network["policies"],
            "assets_registries": registries,
            "inference_servers": registries,
            "container_registries": registries,
        },
    }
    extra = ["-e", json.dumps(chosen)]
    first = playbook(kube, "addons.yml", *extra)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    assert network["admin"] not in first.stdout
    for name in ("assets-registry", "policy-executor", "inference-server", "model-splitter"):
        ready = kube.get("Deployment", name, "aios-addons")["status"].get("readyReplicas")
        assert ready == 1, name
    # The assets bucket's setup job ran once MinIO was ready.
    assert kube.get("Job", "assets-storage-bucket", "aios-addons")["status"]["succeeded"] == 1
    # The model splitter has no register-only route upstream: the run says so, names the URL
    # the network reaches it at, and sends the registries nothing for it.
    assert "model-splitter is not registered with the network" in first.stdout
    assert "http://127.0.0.1:31701 (POST /start_model_split_job)" in first.stdout
    assert not any("split" in path for _, path, _ in StandInRegistries.requests)
    secret = kube.get("Secret", "assets-storage-credentials", "aios-addons")
    keys = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert len(keys["secret_key"]) == 48 and keys["secret_key"] not in first.stdout
    documents = StandInRegistries.documents
    assert sorted(documents) == [
        ("asset_registry", "west-1-assets-registry"),
        ("inference_server", "inference-server-1"),
    ]
    assert documents[("asset_registry", "west-1-assets-registry")] == {
        "asset_registry_id": "west-1-assets-registry",
        "asset_registry_name": "west-1 assets registry",
        "asset_registry_metadata": {},
        "asset_registry_tags": [],
        "asset_registry_public_url": "http://127.0.0.1:31700",
    }
    assert documents[("inference_server", "inference-server-1")]["inference_server_public_url"] == (
        "http://127.0.0.1:31500"
    )
    executors = httpx.get(
        f"{network['policies']}/executors", headers={"Authorization": f"Bearer {network['admin']}"}
    ).json()
    assert [(e["id"], e["url"]) for e in executors] == [("executor-001", "http://127.0.0.1:30900")]

    again = playbook(kube, "addons.yml", *extra)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-4000:]
    kept = kube.get("Secret", "assets-storage-credentials", "aios-addons")["data"]["secret_key"]
    assert base64.b64decode(kept).decode() == keys["secret_key"]

    removed = playbook(
        kube, "addons.yml", "-e", json.dumps({**chosen, "cluster_addons_state": "absent"})
    )
    assert removed.returncode == 0, removed.stdout[-4000:]
    assert StandInRegistries.documents == {}
    assert (
        httpx.get(
            f"{network['policies']}/executors",
            headers={"Authorization": f"Bearer {network['admin']}"},
        ).json()
        == []
    )
    assert kube.get("Deployment", "assets-registry", "aios-addons") is None
    assert kube.get("PersistentVolumeClaim", "assets-db-data", "aios-addons") is not None
