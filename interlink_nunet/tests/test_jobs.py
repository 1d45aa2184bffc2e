"""Pods as NuNet job payloads, and the pods that cannot be one."""

from __future__ import annotations

import copy

import pytest
from conftest import fixture

from interlink_nunet.jobs import PodRejected, build_job
from interlink_nunet.resources import GpuModel, consolidate

SEED_POD = fixture("seed_create_body.json")[0]
GPU_POD = fixture("seed_gpu_pod.json")
MODELS = consolidate(fixture("seed_peers.json")).models


def pod(**container) -> dict:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u-1"},
            "spec": {"containers": [{"name": "c", "image": "busybox", **container}]}}


def test_the_seeds_quickstart_pod() -> None:
    job = build_job(SEED_POD, [], "nunet.io", MODELS)
    assert job == {
        "job": "busybox",
        "jobparams": "/bin/sh -c 'sleep 600 && echo '\"'\"'FINISHED!'\"'\"''",
        "jobenv": {},
        "requiredCapability": {
            "executor": "docker",
            "type": {"description": "batch"},
            "resources": {"cpu": {"cores": 1}, "ram": 1024},
        },
    }


def test_the_seeds_gpu_job_with_its_legacy_resource_name() -> None:
    gpu_pod = copy.deepcopy(GPU_POD)
    gpu_pod["metadata"]["uid"] = "u-gpu"
    gpu_pod["spec"]["activeDeadlineSeconds"] = 6300
    job = build_job(gpu_pod, [], "nunet.io", MODELS)
    assert job["job"] == "tensorflow/tensorflow:latest-gpu"
    assert job["jobparams"] == "python -u path/to/your/tensorflow/script.py"
    assert job["requiredCapability"]["resources"] == {
        "cpu": {"cores": 8}, "ram": 131072,
        # V100s are not among the peers: the request says what the name says
        "gpu": {"brand": "nvidia", "model": "V100", "vram": 40960, "count": 1},
    }
    assert job["requiredCapability"]["time"] == {"units": "seconds", "max_time": 6300}


@pytest.mark.parametrize(("resource", "gpu"), [
    ("nunet.io/gpu.nvidia.rtx.3080.10gb",
     {"brand": "nvidia", "model": "NVIDIA GeForce RTX 3080", "vram": 10240}),
    ("nunet.io/gpu.nvidia.tesla.p100.16gb",
     {"brand": "nvidia", "model": "Tesla P100-PCIE-16GB", "vram": 16384}),
    ("nvidia.com/gpu", {"brand": "nvidia"}),
])
def test_gpu_pods_ask_for_the_card_the_peers_have(resource, gpu) -> None:
    job = build_job(pod(resources={"limits": {resource: "2", "cpu": "500m", "memory": "1.5Gi"}}),
                    [], "nunet.io", MODELS)
    assert job["requiredCapability"]["resources"] == {
        "cpu": {"cores": 1}, "ram": 1536, "gpu": {**gpu, "count": 2}}


def test_requests_count_when_there_are_no_limits() -> None:
    job = build_job(pod(resources={"requests": {"cpu": "3", "memory": "2000M"}}), [],
                    "nunet.io", MODELS)
    assert job["requiredCapability"]["resources"] == {"cpu": {"cores": 3}, "ram": 1908}


def test_environment_from_values_and_config_maps() -> None:
    config_maps = [{"metadata": {"name": "settings"}, "data": {"MODE": "fast", "LEVEL": "3"}}]
    job = build_job(pod(
        env=[{"name": "PLAIN", "value": "1"},
             {"name": "FROM_MAP", "valueFrom": {"configMapKeyRef": {"name": "settings",
                                                                   "key": "MODE"}}},
             {"name": "OPTIONAL", "valueFrom": {"configMapKeyRef": {
                 "name": "absent", "key": "x", "optional": True}}}],
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
    ), config_maps, "nunet.io", MODELS)
    assert job["jobenv"] == {"CFG_MODE": "fast", "CFG_LEVEL": "3", "PLAIN": "1",
                             "FROM_MAP": "fast"}


@pytest.mark.parametrize(("change", "message"), [
    ({"env": [{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
     "env 'PASSWORD' \\(secretKeyRef\\) refers to a Secret; the NuNet plugin never sends"),
    ({"envFrom": [{"secretRef": {"name": "creds"}}]}, "envFrom secretRef 'creds'"),
    ({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]},
     "config map 'gone' was not sent"),
    ({"env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]},
     "env 'NODE' uses \\['fieldRef'\\]"),
    ({"image": ""}, "image of pod ns/p is empty"),
    ({"resources": {"limits": {"cpu": "lots"}}}, "quantity is invalid"),
    ({"resources": {"limits": {"nunet.io/gpu.nvidia.rtx.3080.10gb": "1",
                               "nvidia.com/gpu": "1"}}}, "several GPU kinds"),
])
def test_pods_that_cannot_be_a_job_say_why(change, message) -> None:
    with pytest.raises(PodRejected, match=message):
        build_job(pod(**change), [], "nunet.io", MODELS)


def test_multi_container_pods_are_refused_naming_the_containers() -> None:
    two = pod()
    two["spec"]["containers"].append({"name": "sidecar", "image": "envoy"})
    with pytest.raises(PodRejected, match=r"containers \['c', 'sidecar'\].*exactly one image"):
        build_job(two, [], "nunet.io", MODELS)
    init = pod()
    init["spec"]["initContainers"] = [{"name": "setup", "image": "busybox"}]
    with pytest.raises(PodRejected, match="init:setup"):
        build_job(init, [], "nunet.io", MODELS)


def test_a_pod_without_uid_is_refused() -> None:
    nameless = pod()
    del nameless["metadata"]["uid"]
    with pytest.raises(PodRejected, match=r"metadata\.uid"):
        build_job(nameless, [], "nunet.io", {})


def test_known_models_come_from_the_peers() -> None:
    assert MODELS["gpu.nvidia.rtx.3090.24gb"] == GpuModel("nvidia", "NVIDIA GeForce RTX 3090",
                                                          24576)


def test_a_config_map_reference_not_sent_says_the_truth_and_the_fix() -> None:
    """interLink 0.6.2 sends only config maps mounted as volumes; the message says so."""
    with pytest.raises(PodRejected) as refused:
        build_job(pod(env=[{"name": "X", "valueFrom": {"configMapKeyRef": {
            "name": "cfg", "key": "k"}}}]), [], "nunet.io", MODELS)
    message = str(refused.value)
    assert "only the config maps a container mounts as volumes" in message
    assert "Mount config map 'cfg' as a volume" in message
    assert "SkipDownwardAPIResolution" in message and "secretKeyRef" in message


def test_a_config_map_mounted_for_the_environment_resolves_it() -> None:
    referring = pod(env=[{"name": "X", "valueFrom": {"configMapKeyRef": {
        "name": "cfg", "key": "k"}}}], volumeMounts=[{"name": "cfg-vol", "mountPath": "/cfg"}])
    referring["spec"]["volumes"] = [{"name": "cfg-vol", "configMap": {"name": "cfg"}}]
    job = build_job(referring, [{"metadata": {"name": "cfg"}, "data": {"k": "v"}}],
                    "nunet.io", MODELS)
    assert job["jobenv"] == {"X": "v"}


def test_values_the_kubelet_already_resolved_from_secrets_pass_as_values() -> None:
    """The decision: with envFrom secretRef (always) or SkipDownwardAPIResolution, the
    virtual kubelet sends a Secret's value as a plain env value; the plugin cannot tell it
    from any other value and passes it on (README: keep secrets out of this node's pods)."""
    job = build_job(pod(env=[{"name": "TOKEN", "value": "resolved-by-the-kubelet"}]), [],
                    "nunet.io", MODELS)
    assert job["jobenv"] == {"TOKEN": "resolved-by-the-kubelet"}


@pytest.mark.parametrize(("volume", "message"), [
    ({"secret": {"secretName": "creds"}}, "volume 'v' .*Secret 'creds'.* never sends"),
    ({"configMap": {"name": "files"}}, "volume 'v' .*config map 'files' as files"),
    ({"projected": {"sources": [{"secret": {"name": "creds"}}]}},
     "projecting Secret 'creds'"),
    ({"projected": {"sources": [{"configMap": {"name": "files"}}]}}, "config map 'files'"),
])
def test_mounted_config_maps_and_secrets_are_refused_naming_the_volume(volume, message) -> None:
    mounted = pod(volumeMounts=[{"name": "v", "mountPath": "/data"}])
    mounted["spec"]["volumes"] = [{"name": "v", **volume}]
    with pytest.raises(PodRejected, match=message):
        build_job(mounted, [], "nunet.io", MODELS)


def test_the_service_account_token_volume_is_left_out() -> None:
    mounted = pod(volumeMounts=[{"name": "kube-api-access-x", "mountPath": "/var/run/sa"}])
    mounted["spec"]["volumes"] = [{"name": "kube-api-access-x", "projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": []}}]}}]
    assert build_job(mounted, [], "nunet.io", MODELS)["job"] == "busybox"
