"""Nodes and clusters in the shape onboarding produces, made by the collection's own
onboarding code (plugins/module_utils) from Kubernetes Node objects and nvidia-smi output.

Policies and their documentation are tested on these, not on hand-written shapes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

from conftest import REPO_ROOT, SEED_CLUSTER

_UTILS = REPO_ROOT / "plugins" / "module_utils"
_PACKAGE = "ansible_collections.aios.platform.plugins.module_utils"


def _load(name: str) -> ModuleType:
    qualified = f"{_PACKAGE}.{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    spec = importlib.util.spec_from_file_location(qualified, _UTILS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module


quantity = _load("quantity")  # onboarding imports it under the collection's name
gpu = _load("gpu")
onboarding = _load("onboarding")

# nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap,mig.mode.current
#            --format=csv,noheader,nounits, as real cards answer it
A100_80GB = "NVIDIA A100-SXM4-80GB, 81920, 535.104.05, 8.0, Disabled"
L4_24GB = "NVIDIA L4, 23034, 535.104.05, 8.9, [N/A]"  # a "24 GB" card: 23034 MiB


def node_object(name: str, *, cpu: str = "64", memory: str = "527988612Ki") -> dict[str, Any]:
    """A Kubernetes Node as ``kubectl get nodes -o json`` lists it."""
    return {
        "metadata": {"name": name, "annotations": {}},
        "status": {
            "capacity": {"cpu": cpu, "memory": memory, "ephemeral-storage": "1919662012Ki"},
            "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
        },
    }


def node(name: str, *nvidia_smi_lines: str) -> dict[str, Any]:
    """A nodeData entry as onboarding makes it, with the GPUs nvidia-smi reports."""
    gpus = gpu.parse_gpus("\n".join(nvidia_smi_lines))
    annotation = gpu.annotation(gpus) if gpus else None
    return onboarding.node_entry(node_object(name), [], annotation)


def cluster(cluster_id: str, *nodes: dict[str, Any]) -> dict[str, Any]:
    """A cluster document as onboarding makes it: the sample's config with these nodes."""
    config = {k: v for k, v in json.loads(SEED_CLUSTER.read_text()).items()
              if k not in onboarding.NODE_FIELDS}
    config["id"] = cluster_id
    config["config"] = {k: v for k, v in config["config"].items() if k != "actionsPolicyMap"}
    document, warnings = onboarding.build_document(config, [], None)
    assert not warnings, warnings
    document.update(onboarding.aggregate(list(nodes)))
    return document
