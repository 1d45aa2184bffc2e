"""Onboarding aggregation of a large cluster: time and peak memory.

Generates 5,000 Node objects of the shape `kubectl get nodes -o json` prints (mixed GPU
models in the gpu.aios/info annotation, some CPU-only nodes), builds the cluster document
with the collection's onboarding code and validates it with the registry's model, as
cluster_onboard does. Target: <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from render_site import COLLECTIONS, link_collection

link_collection()
sys.path.insert(0, str(COLLECTIONS))

from ansible_collections.aios.platform.plugins.module_utils import onboarding
from ansible_collections.aios.platform.plugins.module_utils.cluster_document import (
    ClusterDocument,
)

GPU_MODELS = [("NVIDIA A100-SXM4-80GB", 81920), ("NVIDIA H100 80GB HBM3", 81559),
              ("Tesla T4", 15360), ("NVIDIA L4", 23034)]
SEED = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json").read_text())


def node(index: int, rng: random.Random) -> dict:
    count = rng.choice([0, 1, 2, 4, 8])
    model, memory = rng.choice(GPU_MODELS)
    annotations = {"node.alpha.kubernetes.io/ttl": "0"}
    if count:
        annotations["gpu.aios/info"] = json.dumps(
            [{"modelName": model, "memory": memory}] * count, separators=(",", ":"))
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": f"worker-{index:05d}", "annotations": annotations,
                     "labels": {"kubernetes.io/hostname": f"worker-{index:05d}"}},
        "status": {
            "capacity": {"cpu": str(rng.choice([16, 32, 64])), "memory": "131891220Ki",
                         "ephemeral-storage": "1966013956Ki", "pods": "110"},
            "addresses": [{"type": "InternalIP", "address": f"10.1.{index // 250}.{index % 250}"},
                          {"type": "Hostname", "address": f"worker-{index:05d}"}],
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=5000)
    args = parser.parse_args()
    rng = random.Random(11)
    nodes = [node(i, rng) for i in range(args.nodes)]
    config = {k: SEED[k] for k in ("id", "regionId", "config", "tags", "clusterMetadata")}
    tracemalloc.start()
    started = time.perf_counter()
    document, warnings = onboarding.build_document(config, nodes)
    built = time.perf_counter()
    ClusterDocument.model_validate(document)
    finished = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    total = finished - started
    print(f"nodes: {args.nodes}  GPUs: {document['gpus']['count']}  warnings: {len(warnings)}")
    print(f"build {built - started:.3f} s + validate {finished - built:.3f} s = {total:.3f} s"
          f"   target <= 1 s   {'meets target' if total <= 1 else 'MISSES target'}")
    print(f"peak memory during build and validation: {peak / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
