"""NuNet resource consolidation of a large peers dump: time and peak memory.

Generates 10,000 peers in the shape of DMS's ``GET /api/v1/peers/dht/dump`` (mixed GPU
models and counts, CPU-only peers, a share unavailable), serialises them to JSON as DMS
sends them, then parses and consolidates them as the plugin does for every ping.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import tracemalloc

from interlink_nunet.resources import consolidate

GPUS = [("NVIDIA GeForce RTX 3080", 10240), ("NVIDIA GeForce RTX 3090", 24576),
        ("Tesla P100-PCIE-16GB", 16384), ("NVIDIA A100-SXM4-80GB", 81920),
        ("NVIDIA GeForce RTX 4090", 24564), ("AMD Radeon RX 7900 XTX", 24560)]


def peer(index: int, rng: random.Random) -> dict:
    gpus = [rng.choice(GPUS) for _ in range(rng.choice([0, 0, 1, 2, 4, 8]))]
    return {
        "peer_id": f"Qm{index:044d}",
        "is_available": rng.random() > 0.2,
        "has_gpu": bool(gpus),
        "allow_cardano": False,
        "gpu_info": [{"name": n, "tot_vram": v, "free_vram": v - 400} for n, v in gpus] or None,
        "tokenomics_addrs": "addr_test1" + "q" * 90,
        "available_resources": {"id": 1, "tot_cpu_hz": rng.randint(2000, 120000),
                                "ram": rng.randint(2000, 256000), "vcpu": rng.randint(1, 64),
                                "disk": 0, "price_cpu": 0, "price_ram": 0, "price_disk": 0,
                                "ntx_price": 0},
        "services": [],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    dump = json.dumps([peer(i, rng) for i in range(args.peers)])
    times = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        result = consolidate(json.loads(dump))
        times.append(time.perf_counter() - started)
    tracemalloc.start()
    consolidate(json.loads(dump))
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    gpus = sum(result.capacity.gpus.values())
    print(f"consolidation of {args.peers:,} peers ({len(dump) / 2**20:.1f} MiB of JSON, "
          f"{gpus:,} GPUs in {len(result.models)} kinds): best {min(times) * 1000:.0f} ms, "
          f"median {statistics.median(times) * 1000:.0f} ms (JSON parsing included), "
          f"peak memory {peak:.0f} MiB")


if __name__ == "__main__":
    main()
