"""HTTP decision throughput of the runtime over loopback.

Starts a real runtime (``aios-policy serve``) with its embedded database, publishes the
example policy, then drives ``POST /policies/{uri}/eval`` and, for comparison, the bare
``GET /healthz`` of the same server, each with the same number of concurrent keep-alive
clients for a bounded time, with 1, 8 and 32 clients. Prints requests/s, p50 and p99 of
both, and the share of the bare rate that decisions reach; then, with 8 clients, the same
decisions sent with a scoped (executor) token, to show what the token lookup costs.
Targets (8 clients): decisions/s >= 70 % of the bare /healthz rate, p99 <= 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import tempfile
import time
from pathlib import Path

import httpx
from common import example_policy, percentiles, start_runtime, verdict
from policy_runtime.embedded_db import EmbeddedDatabase


def start_server(mongo_uri: str, token: str, pool_size: int, log: Path) -> tuple:
    return start_runtime([], {"AIOS_MONGO_URI": mongo_uri, "AIOS_API_TOKEN": token,
                              "AIOS_POOL_SIZE": str(pool_size)}, log)


def _request(method: str, path: str, token: str, body: bytes = b"") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _client(port: int, request: bytes, stop_at: float, latencies: list, errors: list):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    clock = time.perf_counter
    try:
        while clock() < stop_at:
            started = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(clock() - started)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n", 1)[0].decode())
    finally:
        writer.close()


async def _drive(port: int, request: bytes, clients: int, seconds: float) -> tuple:
    latencies: list[float] = []
    errors: list[str] = []
    # A short warm-up whose samples are dropped.
    await asyncio.gather(*(
        _client(port, request, time.perf_counter() + 1.0, [], []) for _ in range(clients)
    ))
    stop_at = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(
        _client(port, request, stop_at, latencies, errors) for _ in range(clients)
    ))
    return latencies, errors, time.perf_counter() - started


def measure(port: int, request: bytes, clients: int, seconds: float) -> dict:
    latencies, errors, elapsed = asyncio.run(_drive(port, request, clients, seconds))
    p50, p99 = percentiles(latencies)
    return {"rate": len(latencies) / elapsed, "p50_ms": p50 / 1000, "p99_ms": p99 / 1000,
            "count": len(latencies), "errors": errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each phase")
    parser.add_argument("--clients", default="1,8,32",
                        help="concurrent connections, one phase pair per comma-separated count")
    parser.add_argument("--pool-size", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    document, case = example_policy()
    token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedDatabase(Path(tmp) / "db") as database:
        proc, port = start_server(database.uri, token, args.pool_size, Path(tmp) / "server.log")
        try:
            headers = {"Authorization": f"Bearer {token}"}
            published = httpx.post(
                f"http://127.0.0.1:{port}/policies", json=document, headers=headers
            )
            published.raise_for_status()
            uri = published.json()["policy_rule_uri"]
            eval_body = json.dumps(
                {"input_data": case["input_data"], "parameters": case.get("parameters", {})}
            ).encode()
            counts = [int(n) for n in args.clients.split(",")]
            print(f"policy: {uri}\nclients: {args.clients}  pool: {args.pool_size} workers  "
                  f"phase: {args.seconds:g} s  cpus: {os.cpu_count()}", flush=True)
            figures = {}
            for clients in counts:
                print(f"measuring GET /healthz, {clients} clients ...", flush=True)
                bare = measure(port, _request("GET", "/healthz", token), clients, args.seconds)
                print(f"measuring POST /policies/{uri}/eval, {clients} clients ...", flush=True)
                decisions = measure(
                    port, _request("POST", f"/policies/{uri}/eval", token, eval_body),
                    clients, args.seconds,
                )
                figures[clients] = (bare, decisions)
            # The auth check's cost: the same decisions with a scoped (executor) token,
            # looked up in the token store, against the bootstrap token above.
            scoped_at = 8 if 8 in counts else counts[0]
            made = httpx.post(f"http://127.0.0.1:{port}/tokens", headers=headers,
                              json={"name": "bench-executor", "role": "executor"})
            made.raise_for_status()
            print(f"measuring POST /policies/{uri}/eval with an executor token, "
                  f"{scoped_at} clients ...", flush=True)
            scoped = measure(
                port, _request("POST", f"/policies/{uri}/eval", made.json()["token"], eval_body),
                scoped_at, args.seconds,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(f"\n{'clients':8}{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}"
          f"{'vs bare':>9}")
    failed = False
    for clients, (bare, decisions) in figures.items():
        share = decisions["rate"] / bare["rate"]
        for label, measured, extra in (("GET /healthz (bare)", bare, ""),
                                       ("POST .../eval", decisions, f"{share:9.1%}")):
            print(f"{clients:<8}{label:22}{measured['rate']:10.0f}{measured['p50_ms']:10.2f}"
                  f"{measured['p99_ms']:10.2f}{measured['count']:10d}{extra}")
        for label, measured in (("healthz", bare), ("eval", decisions)):
            if measured["errors"]:
                failed = True
                print(f"{clients} clients, {label}: {len(measured['errors'])} non-200 answers, "
                      f"e.g. {measured['errors'][0]}")
    if scoped["errors"]:
        failed = True
        print(f"executor token: {len(scoped['errors'])} non-200 answers, "
              f"e.g. {scoped['errors'][0]}")
    bootstrap_rate = figures[scoped_at][1]["rate"]
    print(f"{scoped_at} clients, executor token: {scoped['rate']:.0f} decisions/s, p99 "
          f"{scoped['p99_ms']:.2f} ms ({scoped['rate'] / bootstrap_rate:.1%} of the bootstrap "
          "token's rate)")
    print()
    target = 8 if 8 in figures else counts[0]
    bare, decisions = figures[target]
    share = decisions["rate"] / bare["rate"]
    print(f"{target} clients: decisions/s vs bare = {share:6.1%}   target >= 70 %   "
          f"{verdict(share, 0.7, False)}")
    print(f"{target} clients: p99 of decisions    = {decisions['p99_ms']:6.2f} ms target <= 10 ms  "
          f"{verdict(decisions['p99_ms'], 10)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
