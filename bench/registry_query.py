"""Clusters registry query latency: the API against pymongo on the same database.

Loads 10,000 generated clusters of the seed's shape into a fresh embedded database,
starts the runtime in mode ``clusters``, then times the same GPU-model + region filter
as ``POST /clusters/query`` (keep-alive HTTP client) and as a direct pymongo ``find``.
Targets: p99 of the API <= 20 ms, API p50 <= 2x the direct query's p50. The direct
figure is the database's own cost: the embedded server (SecantusDB) plans this filter as
a collection scan, so it bounds what the API can reach here; a MongoDB server uses the
regionId index.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import secrets
import signal
import sys
import tempfile
from pathlib import Path

import httpx
from common import REPO, percentiles, time_calls, verdict
from http_decisions import start_server
from policy_runtime.clusters.document import NodeData, aggregate
from policy_runtime.clusters.store import ClusterStore, validated
from policy_runtime.embedded_db import EmbeddedDatabase
from pymongo import MongoClient

SEED = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json").read_text())
REGIONS = [f"{area}-{n}" for area in ("us-west", "us-east", "eu-west", "eu-central", "ap-south")
           for n in (1, 2)]
GPU_MODELS = [("NVIDIA A100", 40960), ("NVIDIA H100", 81920), ("NVIDIA V100", 16384),
              ("NVIDIA T4", 16384), ("NVIDIA L4", 24576), ("NVIDIA RTX 4090", 24576)]
FILTER = {"regionId": "eu-west-1", "nodes.nodeData.gpus.modelNames": "NVIDIA H100",
          "gpus.count": {"$gte": 4}}


def generated_cluster(index: int, rng: random.Random) -> dict:
    nodes = []
    for n in range(rng.randint(1, 8)):
        model, memory = rng.choice(GPU_MODELS)
        count = rng.choice([0, 1, 2, 4, 8])
        nodes.append(NodeData.model_validate({
            "id": f"node-{n}",
            "gpus": {"count": count, "memory": count * memory,
                     "gpus": [{"modelName": model, "memory": memory}] * count,
                     "features": ["fp16"], "modelNames": [model] if count else []},
            "vcpus": {"count": rng.choice([16, 32, 64])}, "memory": rng.choice([65536, 131072]),
            "swap": 4096, "storage": {"disks": 2, "size": 1048576},
            "network": {"interfaces": 2, "txBandwidth": 10000, "rxBandwidth": 10000},
        }))
    document = copy.deepcopy(SEED)
    document.update(aggregate(nodes), id=f"cluster-{index:05d}", regionId=rng.choice(REGIONS),
                    status=rng.choice(["live", "live", "live", "draining"]),
                    tags=rng.sample(["gpu", "ml", "vision", "llm", "edge", "prod"], 3))
    return validated(document)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=10_000)
    parser.add_argument("--iterations", type=int, default=300)
    args = parser.parse_args()
    rng = random.Random(7)
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp) / "db") as database:
        client = MongoClient(database.uri)
        collection = client["aios"]["clusters"]
        store = ClusterStore(client["aios"])
        store.ensure_indexes()
        print(f"loading {args.clusters} clusters ...", flush=True)
        batch = []
        for index in range(args.clusters):
            batch.append({**generated_cluster(index, rng), "_rev": 1})
            if len(batch) == 1000:
                collection.insert_many(batch)
                batch = []
        if batch:
            collection.insert_many(batch)
        os.environ["AIOS_RUN_MODES"] = "clusters"
        proc, port = start_server(database.uri, token, 1, Path(tmp) / "server.log")
        try:
            api = httpx.Client(base_url=f"http://127.0.0.1:{port}",
                               headers={"Authorization": f"Bearer {token}"})
            expected = len(list(collection.find(FILTER, {"_id": 0, "_rev": 0}).limit(100)))
            got = api.post("/clusters/query", json=FILTER, params={"limit": 100}).json()
            assert len(got) == expected, (len(got), expected)
            print(f"filter {json.dumps(FILTER)} matches {expected} clusters", flush=True)
            direct = percentiles(time_calls(
                lambda: list(collection.find(FILTER, {"_id": 0, "_rev": 0}).limit(100)),
                args.iterations, warmup=20))
            through_api = percentiles(time_calls(
                lambda: api.post("/clusters/query", json=FILTER, params={"limit": 100}).json(),
                args.iterations, warmup=20))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"\n{'':28}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'pymongo find (direct)':28}{direct[0] / 1000:10.2f}{direct[1] / 1000:10.2f}")
    print(f"{'POST /clusters/query':28}{through_api[0] / 1000:10.2f}{through_api[1] / 1000:10.2f}")
    overhead = through_api[0] / direct[0]
    print(f"\nAPI p99        = {through_api[1] / 1000:6.2f} ms target <= 20 ms  "
          f"{verdict(through_api[1] / 1000, 20)}")
    print(f"API / direct   = {overhead:6.2f}    target <= 2     {verdict(overhead, 2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
