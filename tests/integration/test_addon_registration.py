"""aios.platform.network_registration: the add-ons registered with the network.

The registries of container registries, assets registries and inference servers are stand-ins
that answer upstream's routes and record every request; the policies system and the policy
executor are real runtime processes on one embedded database (an executor on the policies
system's database), plus an executor with a database of its own that gets its token as the
role hands it over (``aios-policy token create ... --token-from-stdin``).
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
import yaml
from conftest import run_collection_module
from render_site import REPO

MODULE = REPO / "plugins" / "modules" / "network_registration.py"
POLICY = """class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        return {"allowed": input_data["gpus"] > 0, "where": "executor"}
"""


class StandInRegistries(BaseHTTPRequestHandler):
    """Upstream's registry routes (POST /<kind>, GET|PUT|DELETE /<kind>/<id>), in memory."""

    documents: ClassVar[dict[tuple[str, str], dict]] = {}
    requests: ClassVar[list[tuple[str, str, dict | None]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.requests.append((method, self.path, body))
        parts = self.path.strip("/").split("/")
        kind = parts[0]
        if method == "POST" and len(parts) == 1:
            key = (kind, body[f"{kind}_id"])
            self.documents[key] = body
            return self.answer(201, {"success": True, "data": {"id": key[1]}})
        key = (kind, parts[1] if len(parts) > 1 else "")
        if key not in self.documents:
            return self.answer(404, {"success": False, "error": "not found"})
        if method == "GET":
            return self.answer(200, {"success": True, "data": self.documents[key]})
        if method == "PUT":
            self.documents[key] = {**self.documents[key], **body}
            return self.answer(200, {"success": True, "data": {"message": "updated"}})
        del self.documents[key]
        return self.answer(200, {"success": True, "data": {"message": "deleted"}})

    def do_GET(self) -> None:
        self.handle_any("GET")

    def do_POST(self) -> None:
        self.handle_any("POST")

    def do_PUT(self) -> None:
        self.handle_any("PUT")

    def do_DELETE(self) -> None:
        self.handle_any("DELETE")


@pytest.fixture()
def registries() -> Iterator[tuple[str, type[StandInRegistries]]]:
    StandInRegistries.documents = {}
    StandInRegistries.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInRegistries)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", StandInRegistries
    server.shutdown()
    server.server_close()


def register(api_url: str, check_mode: bool = False, **args: object) -> dict:
    return run_collection_module(MODULE, {"api_url": api_url, **args}, check_mode=check_mode)


ASSETS = {
    "kind": "asset_registry",
    "id": "west-1-assets-registry",
    "name": "ResNet Models registry",
    "metadata": {"framework": "PyTorch"},
    "tags": ["image-classification"],
    "public_url": "http://192.0.2.10:31700",
}


def test_an_assets_registry_is_registered_once_updated_and_deregistered(registries) -> None:
    url, stand_in = registries
    preview = register(url, check_mode=True, **ASSETS)
    assert preview["changed"] is True and stand_in.documents == {}
    assert [r[0] for r in stand_in.requests] == ["GET"]

    first = register(url, **ASSETS)
    assert first["changed"] is True, first
    method, path, body = stand_in.requests[-1]
    assert (method, path) == ("POST", "/asset_registry")
    assert body == {
        "asset_registry_id": "west-1-assets-registry",
        "asset_registry_name": "ResNet Models registry",
        "asset_registry_metadata": {"framework": "PyTorch"},
        "asset_registry_tags": ["image-classification"],
        "asset_registry_public_url": "http://192.0.2.10:31700",
    }

    stand_in.requests.clear()
    again = register(url, **ASSETS)
    assert again["changed"] is False and again["registration"] == body
    assert stand_in.requests == [("GET", "/asset_registry/west-1-assets-registry", None)]

    moved = register(url, **{**ASSETS, "public_url": "http://192.0.2.11:31700"})
    assert moved["changed"] is True
    method, path, body = stand_in.requests[-1]
    assert (method, path) == ("PUT", "/asset_registry/west-1-assets-registry")
    assert body["asset_registry_public_url"] == "http://192.0.2.11:31700"
    assert moved["diff"]["before"]["asset_registry_public_url"] == "http://192.0.2.10:31700"

    gone_preview = register(
        url, check_mode=True, kind="asset_registry", id=ASSETS["id"], state="absent"
    )
    assert gone_preview["changed"] is True and stand_in.documents
    gone = register(url, kind="asset_registry", id=ASSETS["id"], state="absent")
    assert gone["changed"] is True and stand_in.documents == {}
    assert stand_in.requests[-1][:2] == ("DELETE", "/asset_registry/west-1-assets-registry")
    still_gone = register(url, kind="asset_registry", id=ASSETS["id"], state="absent")
    assert still_gone["changed"] is False


def test_container_registries_and_inference_servers_get_upstreams_documents(registries) -> None:
    url, stand_in = registries
    done = register(
        url,
        kind="container_registry",
        id="west-1-container-registry",
        public_url="http://192.0.2.10:31280",
        extra={"image_prefix": "192.0.2.10:31280", "storage_info": {"size": "50Gi"}},
    )
    assert done["changed"] is True, done
    assert stand_in.documents[("container_registry", "west-1-container-registry")] == {
        "container_registry_id": "west-1-container-registry",
        "container_registry_name": "west-1-container-registry",
        "container_registry_metadata": {},
        "container_registry_tags": [],
        "container_registry_public_url": "http://192.0.2.10:31280",
        "container_registry_image_prefix": "192.0.2.10:31280",
        "container_registry_storage_info": {"size": "50Gi"},
    }
    server = {
        "kind": "inference_server",
        "id": "inference-server-1",
        "name": "server-pr-home-123",
        "tags": ["NLP", "Transformer"],
        "metadata": {"region": "us-east-1"},
        "public_url": "http://192.0.2.10:31500",
    }
    assert register(url, **server)["changed"] is True
    assert stand_in.documents[("inference_server", "inference-server-1")] == {
        "inference_server_id": "inference-server-1",
        "inference_server_name": "server-pr-home-123",
        "inference_server_metadata": {"region": "us-east-1"},
        "inference_server_tags": ["NLP", "Transformer"],
        "inference_server_public_url": "http://192.0.2.10:31500",
    }
    assert register(url, **server)["changed"] is False
    missing = register(url, kind="inference_server", id="x")
    assert missing["failed"] is True and "public_url" in missing["msg"]


# --- the policy executor -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_runtime(tmp: Path, name: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "policy_runtime", "serve", "--port", str(port)],
        env={
            **os.environ,
            "AIOS_RUN_MODES": "policies",
            "AIOS_POOL_SIZE": "1",
            "AIOS_TOKEN_CACHE_SECONDS": "0",
            **env,
        },
        stdout=(tmp / f"{name}.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        assert proc.poll() is None, (tmp / f"{name}.log").read_text()[-2000:]
        time.sleep(0.2)
    raise AssertionError(f"{name} did not start")


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The network's policies system and the cluster's executors (real runtimes)."""
    from policy_runtime.embedded_db import EmbeddedDatabase

    tmp = tmp_path_factory.mktemp("executor")
    shared = EmbeddedDatabase(tmp / "network-db").start()
    own = EmbeddedDatabase(tmp / "executor-db").start()
    admin, executor_admin = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    started = []
    try:
        common = {"AIOS_MONGO_URI": shared.uri, "AIOS_DB_NAME": "policies"}
        started.append(
            start_runtime(
                tmp,
                "policies-system",
                {**common, "AIOS_API_TOKEN": admin, "AIOS_EXECUTOR_ALLOWED_HOSTS": "127.0.0.1"},
            )
        )
        started.append(start_runtime(tmp, "executor", {**common, "AIOS_API_TOKEN": executor_admin}))
        started.append(
            start_runtime(
                tmp,
                "own-executor",
                {
                    "AIOS_MONGO_URI": own.uri,
                    "AIOS_DB_NAME": "policies",
                    "AIOS_API_TOKEN": executor_admin,
                },
            )
        )
        yield {
            "policies": started[0][1],
            "executor": started[1][1],
            "own": started[2][1],
            "own_db": own.uri,
            "shared_db": shared.uri,
            "admin": admin,
            "tmp": tmp,
            "started": started,
        }
    finally:
        for proc, _ in started:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        shared.stop()
        own.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_the_executor_is_registered_once_and_evaluates_for_the_network(network) -> None:
    policies, admin = network["policies"], network["admin"]
    executor = {
        "kind": "executor",
        "id": "executor-west-1",
        "public_url": network["executor"],
        "api_token": admin,
    }
    preview = register(policies, check_mode=True, **executor)
    assert preview["changed"] is True and "executor_token" not in preview
    listed = httpx.get(f"{policies}/executors", headers=bearer(admin)).json()
    assert listed == []

    first = register(policies, **executor)
    assert first["changed"] is True, first
    assert first["registration"] == {"id": "executor-west-1", "url": network["executor"]}
    assert first["executor_token_name"] == "executor-executor-west-1" and first["executor_token"]
    again = register(policies, **executor)
    assert again["changed"] is False and "executor_token" not in again

    published = httpx.post(
        f"{policies}/policies",
        headers=bearer(admin),
        json={"name": "addons.gpu-check", "version": "v1", "code": POLICY},
    )
    assert published.status_code == 201, published.text
    uri = published.json()["policy_rule_uri"]
    # The network forwards to the executor with the executor's own token.
    answer = httpx.post(
        f"{policies}/executor/executor-west-1/execute_policy",
        headers=bearer(first["executor_token"]),
        json={"policy_rule_uri": uri, "input_data": {"gpus": 2}},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"success": True, "data": {"allowed": True, "where": "executor"}}

    gone = register(
        policies, kind="executor", id="executor-west-1", state="absent", api_token=admin
    )
    assert gone["changed"] is True
    assert httpx.get(f"{policies}/executors", headers=bearer(admin)).json() == []
    # Its token is revoked with it.
    refused = httpx.post(
        f"{policies}/execute_policy",
        headers=bearer(first["executor_token"]),
        json={"policy_rule_uri": uri, "input_data": {"gpus": 2}},
    )
    assert refused.status_code == 401
    assert (
        register(policies, kind="executor", id="executor-west-1", state="absent", api_token=admin)[
            "changed"
        ]
        is False
    )


def hand_over(registered: dict, mongo_uri: str) -> subprocess.CompletedProcess:
    """Run the command of roles/cluster_addons/tasks/register.yml as the pod would."""
    tasks = yaml.safe_load(
        (REPO / "roles" / "cluster_addons" / "tasks" / "register.yml").read_text()
    )
    block = next(t for t in tasks if "block" in t)["block"]
    command = next(t for t in block if "kubernetes.core.k8s_exec" in t)["kubernetes.core.k8s_exec"][
        "command"
    ]
    for key in ("executor_token", "executor_token_name"):
        command = command.replace(
            "{{ _cluster_addons_executor." + key + " | quote }}", shlex.quote(registered[key])
        )
    assert "{{" not in command
    return subprocess.run(
        shlex.split(command),
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "AIOS_MONGO_URI": mongo_uri,
            "AIOS_DB_NAME": "policies",
        },
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_an_executor_with_its_own_database_accepts_the_token_it_is_handed(network) -> None:
    policies, admin, own = network["policies"], network["admin"], network["own"]
    done = register(policies, kind="executor", id="executor-own", public_url=own, api_token=admin)
    assert done["changed"] is True, done
    token = done["executor_token"]
    probe = {"policy_rule_uri": "addons.none:v1", "input_data": {}}
    assert httpx.post(f"{own}/execute_policy", headers=bearer(token), json=probe).status_code == 401
    # The role's command in the executor's pod: revoke an older token, store this one.
    handed = hand_over(done, network["own_db"])
    assert handed.returncode == 0, handed.stderr
    assert token not in handed.stdout + handed.stderr
    answer = httpx.post(f"{own}/execute_policy", headers=bearer(token), json=probe)
    assert answer.status_code == 404, answer.text  # accepted; the policy is not in its store
    moved = register(
        policies, kind="executor", id="executor-own", public_url=own + "/", api_token=admin
    )
    assert moved["changed"] is False  # the same URL
    elsewhere = register(
        policies,
        kind="executor",
        id="executor-own",
        public_url="http://127.0.0.1:1",
        api_token=admin,
    )
    assert elsewhere["changed"] is True and elsewhere["executor_token"] != token
    assert hand_over(elsewhere, network["own_db"]).returncode == 0
    assert httpx.post(f"{own}/execute_policy", headers=bearer(token), json=probe).status_code == 401
    newer = bearer(elsewhere["executor_token"])
    assert httpx.post(f"{own}/execute_policy", headers=newer, json=probe).status_code == 404
    refused = register(
        policies,
        kind="executor",
        id="executor-far",
        public_url="http://203.0.113.7:30900",
        api_token=admin,
    )
    assert refused["failed"] is True and "422" in refused["msg"]


SEED_CLUSTER = json.loads(
    (REPO / "policies" / "clusters" / "cluster-west-vision-001.json").read_text()
)


def test_a_remote_controller_evaluates_on_the_registered_executor(network) -> None:
    """A cluster's controller switched to remote mode runs its pre-checks on the add-on
    executor, through the network's policies system, with an executor token of its own."""
    policies, admin = network["policies"], network["admin"]
    done = register(
        policies,
        kind="executor",
        id="executor-addon",
        public_url=network["executor"],
        api_token=admin,
    )
    assert done["changed"] is True, done
    as_admin = bearer(admin)
    remote = httpx.post(
        f"{policies}/tokens",
        headers=as_admin,
        json={"name": "controller-west-remote", "role": "executor"},
    )
    assert remote.status_code == 201, remote.text
    published = httpx.post(
        f"{policies}/policies",
        headers=as_admin,
        json={"name": "addons.remote-check", "version": "v1", "code": POLICY},
    )
    uri = published.json()["policy_rule_uri"]
    owner = secrets.token_urlsafe(16)
    proc, url = start_runtime(
        network["tmp"],
        "controller",
        {
            "AIOS_RUN_MODES": "controller",
            "AIOS_MONGO_URI": network["shared_db"],
            "AIOS_DB_NAME": "clusters",
            "AIOS_API_TOKEN": owner,
            "AIOS_CLUSTER_ID": SEED_CLUSTER["id"],
            "POLICY_EXECUTION_MODE": "remote",
            "POLICY_SYSTEM_EXECUTOR_ID": "executor-addon",
            "AIOS_POLICIES_URL": policies,
            "AIOS_REMOTE_TOKEN": remote.json()["token"],
        },
    )
    network["started"].append((proc, url))
    cluster = {**SEED_CLUSTER, "config": {**SEED_CLUSTER["config"], "policyExecutorId": ""}}
    created = httpx.post(f"{url}/clusters/create", headers=bearer(owner), json=cluster)
    assert created.is_success, created.text
    mapped = httpx.post(
        f"{url}/pre-check-policies/update", headers=bearer(owner), json={"add_node": uri}
    )
    assert mapped.status_code == 200, mapped.text
    decided = httpx.post(
        f"{url}/pre-check/add_node",
        headers=bearer(owner),
        json={"id": "n-1", "gpus": 1},
        timeout=30,
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["allowed"] is True and decided.json()["policy_rule_uri"] == uri
    # Without the executor registered the same pre-check has nowhere to run.
    gone = register(policies, kind="executor", id="executor-addon", state="absent", api_token=admin)
    assert gone["changed"] is True
    refused = httpx.post(
        f"{url}/pre-check/add_node",
        headers=bearer(owner),
        json={"id": "n-1", "gpus": 1},
        timeout=30,
    )
    assert refused.status_code == 200, refused.text
    assert refused.json()["allowed"] is False
    assert "no executor is registered as 'executor-addon'" in refused.json()["reason"]
