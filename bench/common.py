"""Shared helpers of the benchmarks: timing loops, percentile reports, a runtime to measure."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DIR = REPO / "policies" / "examples" / "scale-block-cap"
EXAMPLE_CASE = EXAMPLE_DIR / "cases" / "rewritten_to_cap.json"


def example_policy() -> tuple[dict, dict]:
    """The benchmarked policy document (code + metadata) and one of its cases."""
    document = json.loads((EXAMPLE_DIR / "policy.json").read_text())
    document["code"] = (EXAMPLE_DIR / "policy.py").read_text()
    return document, json.loads(EXAMPLE_CASE.read_text())


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    """(p50, p99) in microseconds."""
    cuts = statistics.quantiles(samples_s, n=100, method="inclusive")
    return cuts[49] * 1e6, cuts[98] * 1e6


def time_calls(call: Callable[[], Any], iterations: int, warmup: int = 200) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    clock = time.perf_counter
    for _ in range(iterations):
        started = clock()
        call()
        samples.append(clock() - started)
    return samples


def time_interleaved(
    calls: dict[str, Callable[[], Any]], iterations: int, rounds: int = 10
) -> dict[str, list[float]]:
    """Time several calls in alternating rounds, so that drift in machine load (other
    processes, frequency changes) affects each of them alike; samples per call."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            samples[name] += time_calls(call, iterations // rounds, warmup=50)
    return samples


def verdict(value: float, target: float, lower_is_better: bool = True) -> str:
    met = value <= target if lower_is_better else value >= target
    return "meets target" if met else "MISSES target"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_runtime(args: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, int]:
    """``aios-policy serve`` with ``args`` and ``env`` on a free port, once /healthz answers."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "policy_runtime", "serve", "--port", str(port), *args],
        env={**os.environ, "AIOS_ACCESS_LOG": "false", "AIOS_LOG_LEVEL": "WARNING", **env},
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc, port
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"the runtime did not start; see {log}")
