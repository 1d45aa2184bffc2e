"""Where the stability checker's node data comes from.

``push`` (default): the entries last sent to ``PUT /nodes-data`` (agents, the local
default). ``kubernetes``: read live from the cluster the controller runs in — the nodes
and their usage from metrics.k8s.io (metrics-server) — through the kubernetes client,
in-cluster or with the kubeconfig of the environment. Each entry has the shape the
example stability policy reads: ``{"id", "ready", "cpu_percent", "memory_percent",
"gpus", "labels"}``.
"""

from __future__ import annotations

import json
from typing import Any

GPU_ANNOTATION = "gpu.aios/info"
_SUFFIXES = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9,
             "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | None) -> float:
    """A Kubernetes quantity ("250m", "3928640Ki", "4") as a number; 0 when absent."""
    text = str(value or "0").strip()
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            return float(text[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(text)


def node_entries(nodes: list[dict], usage: list[dict]) -> list[dict[str, Any]]:
    """Stability-checker node entries from Node objects and NodeMetrics objects."""
    used = {m["metadata"]["name"]: m.get("usage") or {} for m in usage}
    entries = []
    for node in nodes:
        name = node["metadata"]["name"]
        status = node.get("status") or {}
        allocatable = status.get("allocatable") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        entry: dict[str, Any] = {
            "id": name,
            "ready": conditions.get("Ready") == "True",
            "labels": (node["metadata"].get("labels") or {}),
            "gpus": _gpus(node),
        }
        if name in used:
            cpu, memory = quantity(allocatable.get("cpu")), quantity(allocatable.get("memory"))
            if cpu:
                entry["cpu_percent"] = round(100 * quantity(used[name].get("cpu")) / cpu, 1)
            if memory:
                entry["memory_percent"] = round(
                    100 * quantity(used[name].get("memory")) / memory, 1
                )
        entries.append(entry)
    return entries


def _gpus(node: dict) -> list[dict]:
    """GPUs from the gpu.aios/info annotation (a JSON list) the onboarding agent writes."""
    raw = (node["metadata"].get("annotations") or {}).get(GPU_ANNOTATION)
    try:
        gpus = json.loads(raw) if raw else []
    except ValueError:
        return []
    return [g for g in gpus if isinstance(g, dict)] if isinstance(gpus, list) else []


class KubernetesNodes:
    """Live node data through the kubernetes client."""

    def __init__(self) -> None:
        from kubernetes import client, config  # only needed for this source

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self._core = client.CoreV1Api()
        self._custom = client.CustomObjectsApi()

    def __call__(self, cluster_id: str) -> list[dict[str, Any]]:
        # Plain JSON rather than the client's typed models, which reject partial objects.
        nodes = json.loads(self._core.list_node(_preload_content=False).data)["items"]
        try:
            usage = self._custom.list_cluster_custom_object(
                "metrics.k8s.io", "v1beta1", "nodes"
            ).get("items", [])
        except Exception:  # metrics-server missing: readiness and GPUs still count
            usage = []
        return node_entries(nodes, usage)
