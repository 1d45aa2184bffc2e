"""Acknowledged write throughput of the runtime over loopback, with its embedded database.

Starts a real runtime (``aios-policy serve --embedded-db DIR``), then WRITERS concurrent
clients publish policies (``POST /policies``) and create clusters (``POST /clusters``)
for SECONDS each. Prints acknowledged writes/s and latency p50/p99 of both. Every write is
journaled before it is acknowledged, so this is the rate the service can promise to keep.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from common import REPO, percentiles, start_runtime

ALLOW_ALL = (
    "class AIOSv1PolicyRule:\n"
    "    def __init__(self, rule_id, settings, parameters):\n"
    "        pass\n"
    "    def eval(self, parameters, input_data, context):\n"
    "        return {'allowed': True, 'input_data': input_data}\n"
)
SEED_CLUSTER = REPO / "policies" / "clusters" / "cluster-west-vision-001.json"


def start_server(data_dir: Path, token: str, log: Path) -> tuple[subprocess.Popen, str]:
    proc, port = start_runtime(
        ["--embedded-db", str(data_dir)],
        {"AIOS_API_TOKEN": token, "AIOS_POOL_SIZE": "1", "AIOS_RUN_MODES": "policies,clusters"},
        log,
    )
    return proc, f"http://127.0.0.1:{port}"


async def drive(url: str, token: str, kind: str, writers: int, seconds: float) -> dict:
    cluster = json.loads(SEED_CLUSTER.read_text())
    latencies: list[float] = []
    failures: list[str] = []
    run = secrets.token_hex(3)
    async with httpx.AsyncClient(base_url=url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"}) as api:
        stop_at = time.perf_counter() + seconds

        async def writer(number: int) -> None:
            sequence = 0
            while time.perf_counter() < stop_at:
                sequence += 1
                name = f"bench.{run}.w{number}.n{sequence}"
                started = time.perf_counter()
                if kind == "policies":
                    answer = await api.post("/policies", json={
                        "name": name, "version": "v1", "code": ALLOW_ALL})
                else:
                    answer = await api.post("/clusters", json={**cluster, "id": name})
                if answer.status_code == 201:
                    latencies.append(time.perf_counter() - started)
                else:
                    failures.append(f"{answer.status_code} {answer.text[:120]}")

        await asyncio.gather(*(writer(n) for n in range(writers)))
    return {"acknowledged": len(latencies), "latencies": latencies, "failures": failures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp) / "db", token, Path(tmp) / "server.log")
        try:
            print(f"{args.writers} writers, {args.seconds:.0f} s each, embedded database")
            for kind in ("policies", "clusters"):
                result = asyncio.run(drive(url, token, kind, args.writers, args.seconds))
                p50, p99 = percentiles(result["latencies"])
                print(f"  POST /{kind}: {result['acknowledged'] / args.seconds:7.1f} "
                      f"acknowledged writes/s, p50 {p50 / 1000:.1f} ms, p99 {p99 / 1000:.1f} ms"
                      f", {len(result['failures'])} failed"
                      + (f" (first: {result['failures'][0]})" if result["failures"] else ""))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
