"""The plugin as a real process against the stand-in DMS process, through HTTP."""

from __future__ import annotations

import copy
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import Process, client, fixture, free_port, start_plugin

SEED_PODS = fixture("seed_create_body.json")
SEED_POD = SEED_PODS[0]
UID = SEED_POD["metadata"]["uid"]


def interlink_request(pod: dict, config_maps: list | None = None) -> dict:
    """What interLink 0.5+ posts to /create for one pod."""
    return {"pod": pod, "container": [{"name": c["name"], "configMaps": config_maps or [],
                                       "projectedvolumemaps": [], "secrets": [], "emptyDirs": []}
                                      for c in pod["spec"]["containers"]]}


def a_pod(uid: str, **resources) -> dict:
    pod = copy.deepcopy(SEED_POD)
    pod["metadata"]["uid"], pod["metadata"]["name"] = uid, f"pod-{uid}"
    if resources:
        pod["spec"]["containers"][0]["resources"] = {"limits": resources}
    return pod


def dms_jobs(dms: Process) -> dict:
    return httpx.get(f"{dms.url}/_control/jobs").json()


def get_status(api: httpx.Client, pods: list) -> httpx.Response:
    return api.request("GET", "/status", json=pods)


def test_create_status_logs_delete_of_the_seeds_pod(plugin: Process, dms: Process) -> None:
    with client(plugin) as api:
        created = api.post("/create", json=SEED_PODS)  # the seed's plain list of pods
        assert created.status_code == 200, created.text
        ((answer),) = created.json()
        assert answer["PodUID"] == UID and answer["PodJID"].startswith("job-")
        job_id = answer["PodJID"]
        posted = dms_jobs(dms)[job_id]["payload"]
        assert posted["job"] == "busybox" and posted["requiredCapability"]["executor"] == "docker"

        (status,) = get_status(api, [SEED_POD]).json()
        assert (status["UID"], status["JID"], status["namespace"]) == (UID, job_id, "default")
        assert status["containers"][0]["name"] == "my-container"
        assert "waiting" in status["containers"][0]["state"]

        httpx.post(f"{dms.url}/_control/jobs/{job_id}/running")
        (status,) = get_status(api, [SEED_POD]).json()
        assert status["containers"][0]["state"]["running"]["startedAt"]
        assert status["containers"][0]["ready"] is True

        logs = api.request("GET", "/getLogs", json={
            "Namespace": "default", "PodUID": UID, "PodName": "interlink-quickstart",
            "ContainerName": "my-container", "Opts": {"Tail": 2, "Timestamps": False}})
        assert logs.status_code == 200
        assert logs.text == "line 4 of busybox\nline 5 of busybox\n"

        httpx.post(f"{dms.url}/_control/jobs/{job_id}/finished")
        (status,) = get_status(api, [SEED_POD]).json()
        assert status["containers"][0]["state"]["terminated"]["exitCode"] == 0

        deleted = api.post("/delete", json=SEED_POD)
        assert deleted.status_code == 200 and deleted.json() == f"Pod '{UID}' deleted"
        assert dms_jobs(dms)[job_id]["cancelled"] is True
        (status,) = get_status(api, [SEED_POD]).json()
        assert status["containers"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
        assert api.post("/delete", json=SEED_POD).status_code == 200, "deleting twice is fine"


def test_interlinks_request_shape_and_retries_make_one_job(plugin: Process, dms: Process) -> None:
    pod = a_pod("u-env")
    pod["spec"]["containers"][0]["env"] = [
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}}]
    request = interlink_request(pod, [{"metadata": {"name": "cfg"}, "data": {"mode": "fast"}}])
    with client(plugin) as api:
        first = api.post("/create", json=request)
        assert first.status_code == 200, first.text
        assert set(first.json()) == {"PodUID", "PodJID"}  # one request, one answer
        again = api.post("/create", json=request)
        assert again.json() == first.json(), "interLink retried: the same job, not a new one"
    jobs = dms_jobs(dms)
    assert len(jobs) == 1
    assert jobs[first.json()["PodJID"]]["payload"]["jobenv"] == {"MODE": "fast"}


def test_a_gpu_pod_asks_dms_for_the_right_model(plugin: Process, dms: Process) -> None:
    pod = a_pod("u-gpu", **{"nunet.io/gpu.nvidia.rtx.3090.24gb": "2", "cpu": "4",
                            "memory": "8Gi"})
    with client(plugin) as api:
        created = api.post("/create", json=interlink_request(pod))
        assert created.status_code == 200, created.text
    resources = dms_jobs(dms)[created.json()["PodJID"]]["payload"]["requiredCapability"][
        "resources"]
    assert resources == {"cpu": {"cores": 4}, "ram": 8192, "gpu": {
        "brand": "nvidia", "model": "NVIDIA GeForce RTX 3090", "vram": 24576, "count": 2}}


def test_a_pod_dms_cannot_run_is_a_422_and_posts_nothing(plugin: Process, dms: Process) -> None:
    good, bad = a_pod("u-good"), a_pod("u-bad")
    bad["spec"]["containers"].append({"name": "second", "image": "busybox"})
    with client(plugin) as api:
        refused = api.post("/create", json=[good, bad])
        assert refused.status_code == 422
        assert "exactly one image" in refused.json()["detail"]
        assert api.post("/create", json={"not": "a pod"}).status_code == 422
    assert dms_jobs(dms) == {}, "a bad pod in a batch posts none of it"


def test_ping_resources_and_node(tmp_path: Path, dms: Process) -> None:
    plugin = start_plugin(tmp_path, dms.url, NUNET_PLUGIN_GPU_ONLY="true")
    try:
        with client(plugin) as api:
            ping = get_status(api, [])
            assert ping.status_code == 200
            assert ping.json()["status"] == "ok"
            resources = ping.json()["resources"]
            assert (resources["cpu"], resources["memory"], resources["pods"]) == (
                "17", "113855Mi", "110")
            assert {"resourceType": "nunet.io/gpu.nvidia.rtx.3080.10gb", "available": "4"} in \
                resources["accelerators"]
            assert api.get("/resources").json()["gpu.nvidia.rtx.3090.24gb"] == 2
            capacity = api.get("/resources", params={"of": "capacity"}).json()
            assert capacity["gpu.nvidia.tesla.p100.16gb"] == 3
            node = api.get("/node").json()
            assert node["capacity"]["nunet.io/gpu.nvidia.tesla.p100.16gb"] == "3"
            assert node["allocatable"]["nunet.io/gpu.nvidia.tesla.p100.16gb"] == "0"
            metrics = api.get("/metrics").text
            assert 'nunet_plugin_allocatable{resource="cpu.cores"} 17.0' in metrics
            # the three P100s are capacity, none of them allocatable
            assert 'nunet_plugin_capacity{resource="gpu.nvidia.tesla.p100.16gb"} 3.0' in metrics
            assert 'nunet_plugin_allocatable{resource="gpu.nvidia.tesla.p100.16gb"} 0.0' in metrics
    finally:
        plugin.stop()


def test_dms_down_is_a_clean_error_and_loses_no_mapping(plugin: Process, dms: Process) -> None:
    with client(plugin) as api:
        job_id = api.post("/create", json=[a_pod("u-kept")]).json()[0]["PodJID"]
        dms.stop(signal.SIGKILL)
        for response in (api.post("/create", json=[a_pod("u-new")]),
                         get_status(api, [a_pod("u-kept")])):
            assert response.status_code == 503, response.text
            assert "cannot connect to DMS" in response.json()["detail"]
        assert httpx.get(f"{plugin.url}/healthz").json()["mapped_jobs"] == 1
        assert "nunet_plugin_dms_errors_total" in api.get("/metrics").text

        dms.start()  # the same DMS, back
        (status,) = get_status(api, [a_pod("u-kept")]).json()
        assert status["JID"] == job_id
        assert api.post("/delete", json=a_pod("u-kept")).json() == "Pod 'u-kept' deleted"
        assert dms_jobs(dms)[job_id]["cancelled"] is True
        assert "u-new" not in str(dms_jobs(dms)), "the failed create left nothing behind"
        assert httpx.get(f"{plugin.url}/healthz").json()["mapped_jobs"] == 0


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_a_restart_keeps_every_mapping(tmp_path: Path, dms: Process, how) -> None:
    plugin = start_plugin(tmp_path, dms.url)
    with client(plugin) as api:
        created = {p["PodUID"]: p["PodJID"]
                   for p in api.post("/create", json=[a_pod(f"u-{i}") for i in range(5)]).json()}
    plugin.stop(how)
    restarted = start_plugin(tmp_path, dms.url, token=plugin.token)
    try:
        with client(restarted) as api:
            statuses = get_status(api, [a_pod(uid) for uid in created]).json()
        assert {s["UID"]: s["JID"] for s in statuses} == created
    finally:
        restarted.stop()


def test_every_route_but_healthz_needs_the_token(plugin: Process, tmp_path: Path) -> None:
    from interlink_nunet.app import create_app
    from interlink_nunet.config import Settings
    from interlink_nunet.server import build

    settings = Settings(api_token="x", store_path=tmp_path / "routes.sqlite")
    served = []  # FastAPI keeps an included router as one entry serving its routes
    for route in create_app(build(settings), "x").routes:
        served += route.effective_candidates() if hasattr(route, "effective_candidates") \
            else [route]
    routes = [(method, route.path) for route in served
              for method in getattr(route, "methods", ()) if method != "HEAD"]
    assert ("POST", "/create") in routes and ("GET", "/getLogs") in routes
    for token in (None, "wrong"):
        with client(plugin, token=token or "") as api:
            for method, path in routes:
                answer = api.request(method, path, json=[])
                expected = 200 if path == "/healthz" else 401
                assert answer.status_code == expected, (method, path, token)


def test_interlink_talks_over_the_unix_socket_without_a_token(tmp_path: Path,
                                                              dms: Process) -> None:
    socket_path = tmp_path / "run" / "plugin.sock"
    plugin = start_plugin(tmp_path, dms.url, NUNET_PLUGIN_SOCKET=str(socket_path))
    try:
        mode = stat.S_IMODE(os.stat(socket_path).st_mode)
        assert mode & 0o007 == 0, f"the socket is not open to others: {oct(mode)}"
        transport = httpx.HTTPTransport(uds=str(socket_path))
        with httpx.Client(transport=transport, base_url="http://plugin") as interlink:
            assert interlink.request("GET", "/status", json=[]).status_code == 200
            assert interlink.post("/create", json=[a_pod("u-sock")]).status_code == 200
        with client(plugin, token="") as tcp:
            assert tcp.post("/create", json=[a_pod("u-tcp")]).status_code == 401
    finally:
        plugin.stop()


@pytest.mark.parametrize(("env", "message"), [
    ({"NUNET_PLUGIN_API_TOKEN": "t", "NUNET_PLUGIN_RESOURCE_PREFIX": "kubernetes.io"},
     "NUNET_PLUGIN_RESOURCE_PREFIX: Value error, 'kubernetes.io' is reserved"),
    ({"NUNET_PLUGIN_API_TOKEN": "t", "NUNET_PLUGIN_DMS_LOGS_PATH": "logs"},
     "NUNET_PLUGIN_DMS_LOGS_PATH: Value error, must start with '/'"),
    ({}, "no API token: set NUNET_PLUGIN_API_TOKEN"),
])
def test_bad_settings_stop_the_start_naming_the_variable(env, message) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NUNET_PLUGIN_")}
    started = subprocess.run([sys.executable, "-m", "interlink_nunet"], capture_output=True,
                             text=True, timeout=60, env={**clean, **env,
                                                         "NUNET_PLUGIN_PORT": str(free_port())})
    assert started.returncode == 2
    assert message in started.stderr
