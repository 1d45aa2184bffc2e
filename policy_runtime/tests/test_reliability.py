"""Reliability: load, kill -9 of the runtime, of a sandbox worker and of the database.

Every scenario runs real processes: the runtime server, its sandbox workers and a
MongoDB-wire-protocol database. Clients keep a record of what the server acknowledged and
the checks compare it with what is stored afterwards. AIOS_LOAD_SECONDS sets the load
duration (10 s here, 60 s in ``make soak``); the figures go to the end-of-session report.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import EXAMPLES_DIR, RuntimeServer, free_port, seed_cluster
from policy_sources import ALLOW_ALL, eval_body

from policy_runtime.embedded_db import EmbeddedDatabase
from policy_runtime.store import database as mongo

LOAD_SECONDS = float(os.environ.get("AIOS_LOAD_SECONDS", "10"))
LOAD_CLIENTS = 200
LOAD_PROCESSES = 4
CLUSTERS = 20
REPORT: list[str] = []
GUARD = EXAMPLES_DIR / "update-cluster-field-guard"


@pytest.fixture()
def database(tmp_path: Path) -> Iterator[EmbeddedDatabase]:
    with EmbeddedDatabase(tmp_path / "db") as db:
        yield db


def start_server(database: EmbeddedDatabase, tmp_path: Path, **env: str) -> RuntimeServer:
    # The production default cache: evaluations do not read the policy from the database.
    env = {"AIOS_POOL_SIZE": "2", "AIOS_POLICY_CACHE_SECONDS": "5", **env}
    return RuntimeServer(database.uri, "reliability-token", tmp_path / f"log-{time.time()}",
                         **env).start()


def rss_mib(server: RuntimeServer) -> float:
    return psutil.Process(server.proc.pid).memory_info().rss / 2**20


def prepare(api: httpx.Client, cluster_ids: list[str]) -> str:
    """Publish allow-all and the field guard, create the clusters governed by the guard."""
    allow = api.post("/policies", json={"name": "reliability.allow", "version": "v1",
                                        "code": ALLOW_ALL})
    assert allow.status_code in (200, 201)
    guard = api.post("/policies", json={
        **json.loads((GUARD / "policy.json").read_text()),
        "code": (GUARD / "policy.py").read_text()})
    assert guard.status_code in (200, 201)
    for cluster_id in cluster_ids:
        created = api.post("/clusters", json=seed_cluster(cluster_id))
        assert created.status_code == 201, created.text
        mapped = api.post("/pre-check-policies/update", params={"cluster_id": cluster_id},
                          json={"update_cluster": guard.json()["policy_rule_uri"]})
        assert mapped.status_code == 200, mapped.text
    return allow.json()["policy_rule_uri"]


def load(url: str, token: str, seconds: float, clients: int, allow_uri: str,
         cluster_ids: list[str]) -> dict:
    """``clients`` concurrent clients mixing evals, queries and governed updates, spread over
    client processes: one asyncio loop drives about 50 HTTP clients before its own CPU,
    not the runtime, becomes the limit."""
    processes = max(1, min(LOAD_PROCESSES, clients // 50))
    shares = [list(range(clients))[i::processes] for i in range(processes)]
    with ProcessPoolExecutor(processes) as executor:
        parts = list(executor.map(_load_part, [url] * processes, [token] * processes,
                                  [seconds] * processes, shares, [allow_uri] * processes,
                                  [cluster_ids] * processes))
    stats: dict = {"requests": Counter(), "errors": [], "acked": {}, "retried": 0}
    for part in parts:
        stats["requests"].update(part["requests"])
        stats["errors"].extend(part["errors"])
        stats["acked"].update(part["acked"])
    return stats


def _load_part(url: str, token: str, seconds: float, numbers: list[int], allow_uri: str,
               cluster_ids: list[str]) -> dict:
    return asyncio.run(_clients(url, token, seconds, numbers, allow_uri, cluster_ids))


async def _send(api: httpx.AsyncClient, stats: dict, method: str, path: str,
                body: dict) -> httpx.Response:
    """One request, sent again once when the server closed the kept-alive connection
    before answering it (the race every HTTP client meets when it reuses a connection the
    server is closing, RFC 9112 9.3.1). Every request here is idempotent (reads, and
    updates that set a value); the retries are counted and reported."""
    try:
        return await api.request(method, path, json=body)
    except (httpx.ReadError, httpx.RemoteProtocolError):
        stats["retried"] += 1
        return await api.request(method, path, json=body)


async def _clients(url: str, token: str, seconds: float, numbers: list[int], allow_uri: str,
                   cluster_ids: list[str]) -> dict:
    stats: dict = {"requests": Counter(), "errors": [], "acked": {}, "retried": 0}
    limits = httpx.Limits(max_connections=len(numbers), max_keepalive_connections=len(numbers))
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=60, limits=limits) as api:
        deadline = time.monotonic() + seconds

        async def client(number: int) -> None:
            rng = random.Random(number)
            cluster_id = cluster_ids[number % len(cluster_ids)]
            sequence = 0
            while time.monotonic() < deadline:
                kind = rng.choice(("eval", "eval", "query", "update"))
                if kind == "update":
                    sequence += 1
                request = {
                    "eval": ("POST", f"/policies/{allow_uri}/eval", {"input_data": {"n": number}}),
                    "query": ("POST", "/clusters/query", {"filter": {"id": cluster_id}}),
                    "update": ("PATCH", f"/clusters/update/{cluster_id}",
                               {f"clusterMetadata.additionalInfo.client{number}": sequence}),
                }[kind]
                try:
                    response = await _send(api, stats, *request)
                except httpx.HTTPError as exc:
                    stats["errors"].append(f"{kind}: {type(exc).__name__} {exc}")
                    continue
                if kind == "update" and response.status_code == 200:
                    stats["acked"][number] = (cluster_id, sequence)
                stats["requests"][kind] += 1
                if response.status_code != 200:
                    stats["errors"].append(f"{kind}: {response.status_code} {response.text[:200]}")

        await asyncio.gather(*(client(n) for n in numbers))
    return stats


def lost_updates(api: httpx.Client, acked: dict) -> list[str]:
    """Acknowledged updates whose value is not stored (each client's last one)."""
    lost = []
    stored = {}
    for number, (cluster_id, sequence) in acked.items():
        if cluster_id not in stored:
            stored[cluster_id] = api.get(f"/clusters/{cluster_id}").json()
        info = stored[cluster_id]["clusterMetadata"]["additionalInfo"]
        if info.get(f"client{number}", 0) < sequence:
            lost.append(f"client{number}: acknowledged {sequence}, stored "
                        f"{info.get(f'client{number}')}")
    return lost


def test_200_clients_mixed_load_loses_nothing(database: EmbeddedDatabase, tmp_path: Path) -> None:
    server = start_server(database, tmp_path)
    try:
        cluster_ids = [f"load-{i}" for i in range(CLUSTERS)]
        with server.client() as api:
            allow_uri = prepare(api, cluster_ids)
            load(server.url, server.token, 1, 20, allow_uri, cluster_ids)  # warm up
            before = rss_mib(server)
            stats = load(server.url, server.token, LOAD_SECONDS, LOAD_CLIENTS, allow_uri,
                         cluster_ids)
            after = rss_mib(server)
            lost = lost_updates(api, stats["acked"])
        total = sum(stats["requests"].values())
        REPORT.append(
            f"load: {LOAD_CLIENTS} clients for {LOAD_SECONDS:.0f} s, {total} requests "
            f"({dict(stats['requests'])}, {total / LOAD_SECONDS:.0f}/s), "
            f"{len(stats['errors'])} errors, {stats['retried']} sent again after a closed "
            f"keep-alive connection, {len(lost)} lost updates, "
            f"runtime RSS {before:.0f} -> {after:.0f} MiB")
        assert stats["errors"] == [], stats["errors"][:5]
        assert lost == []
        assert stats["requests"]["update"] > 0 and stats["requests"]["eval"] > 0
        # Flat: a leak of even a few KiB per request would exceed this over the run.
        assert after - before < 64, f"RSS grew from {before:.0f} to {after:.0f} MiB"
    finally:
        server.stop()


def writer(url: str, token: str, number: int, stop: threading.Event, record: dict,
           cluster_id: str) -> None:
    """Publishes policies, governed updates and pre-check decisions until told to stop."""
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    sequence = 0
    while not stop.is_set():
        sequence += 1
        try:
            name = f"reliability.w{number}.p{sequence}"
            if api.post("/policies", json={"name": name, "version": "v1",
                                           "code": ALLOW_ALL}).status_code == 201:
                record["policies"].append(f"{name}:v1")
            if api.patch(f"/clusters/update/{cluster_id}", json={
                    f"clusterMetadata.additionalInfo.client{number}": sequence}).status_code == 200:
                record["acked"][number] = (cluster_id, sequence)
            decision = api.post("/pre-check/update_cluster", params={"cluster_id": cluster_id},
                                json={"update": {"tags": ["x"]}})
            if decision.status_code == 200:
                record["decisions"][cluster_id] += 1
        except httpx.HTTPError:
            time.sleep(0.05)  # the server is down: keep trying, nothing is acknowledged
    api.close()


def test_kill_9_of_the_runtime_loses_no_acknowledged_write(
    database: EmbeddedDatabase, tmp_path: Path
) -> None:
    server = start_server(database, tmp_path)
    cluster_ids = [f"kill-{i}" for i in range(4)]
    with server.client() as api:
        prepare(api, cluster_ids)
    record: dict = {"policies": [], "acked": {}, "decisions": Counter()}
    stop = threading.Event()
    writers = [threading.Thread(target=writer, args=(server.url, server.token, n, stop, record,
                                                     cluster_ids[n % 4])) for n in range(16)]
    for thread in writers:
        thread.start()
    time.sleep(3)
    server.proc.send_signal(signal.SIGKILL)  # mid-load, no shutdown of any kind
    server.proc.wait()
    acknowledged_before_kill = len(record["policies"])
    stop.set()
    for thread in writers:
        thread.join()
    restarted = RuntimeServer(database.uri, server.token, tmp_path / "log-restarted",
                              AIOS_POOL_SIZE="2")
    restarted.port, restarted.url = server.port, server.url
    restarted.start()
    try:
        with restarted.client() as api:
            missing = [uri for uri in record["policies"]
                       if api.get(f"/policies/{uri}").status_code != 200]
            lost = lost_updates(api, record["acked"])
            short = {cid: (count, len(api.get("/decisions", params={
                         "cluster_id": cid, "action": "update_cluster", "limit": 1000}).json()))
                     for cid, count in record["decisions"].items()}
        short = {cid: counts for cid, counts in short.items() if counts[1] < counts[0]}
        REPORT.append(
            f"kill -9 of the runtime under 16 writers: {acknowledged_before_kill} policies, "
            f"{len(record['acked'])} clients' updates and {sum(record['decisions'].values())} "
            f"decisions acknowledged; lost: {len(missing)} policies, {len(lost)} updates, "
            f"{len(short)} clusters with missing decisions")
        assert acknowledged_before_kill > 0
        assert missing == [] and lost == [] and short == {}
    finally:
        restarted.stop()


@pytest.mark.parametrize("options", ["", "&w=0", "&w=1&journal=false",
                                     "&journal=false&w=majority"])
def test_every_write_waits_for_the_journal_whatever_the_uri(options: str) -> None:
    client = mongo.connect(f"mongodb://127.0.0.1:1/?directConnection=true{options}")
    try:
        for collection in ("policies", "clusters", "decisions", "executors", "tokens"):
            assert client["aios"][collection].write_concern.document == {
                "w": "majority", "j": True}
        assert client.options.timeout == mongo.DEFAULT_TIMEOUT_SECONDS
    finally:
        client.close()


def service_with_embedded_db(data_dir: Path, log_path: Path) -> RuntimeServer:
    """``aios-policy serve --embedded-db DIR``, leading a process group of its own: the
    runtime, its sandbox workers and its database, as a container or a systemd unit runs
    them (an OOM kill or a node crash takes them all at once)."""
    service = RuntimeServer("", "reliability-token", log_path, AIOS_POOL_SIZE="2")
    service.args = ["--embedded-db", str(data_dir)]
    service.own_process_group = True
    return service.start()


def group_writer(url: str, token: str, number: int, stop: threading.Event, record: dict,
                 shared_cluster: str, allow_uri: str) -> None:
    """Every kind of write the service acknowledges, over and over: policies, clusters,
    governed updates, pre-check maps, decisions and executors; each acknowledged one is
    recorded. Stops at the first connection error (the service is gone)."""
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    sequence = 0
    try:
        while not stop.is_set():
            sequence += 1
            name = f"group.w{number}.n{sequence}"
            if api.post("/policies", json={"name": name, "version": "v1",
                                           "code": ALLOW_ALL}).status_code == 201:
                record["policies"].append(f"{name}:v1")
            cluster_id = f"group-w{number}-n{sequence}"
            if api.post("/clusters", json=seed_cluster(cluster_id)).status_code == 201:
                record["clusters"].append(cluster_id)
                if api.post("/pre-check-policies/update", params={"cluster_id": cluster_id},
                            json={"add_node": allow_uri}).status_code == 200:
                    record["maps"].append(cluster_id)
            if api.patch(f"/clusters/update/{shared_cluster}", json={
                    f"clusterMetadata.additionalInfo.client{number}": sequence}).status_code == 200:
                record["acked"][number] = (shared_cluster, sequence)
                record["updates"] += 1
            if api.post("/pre-check/update_cluster", params={"cluster_id": shared_cluster},
                        json={"update": {"tags": ["x"]}}).status_code == 200:
                record["decisions"][shared_cluster] += 1
            if api.post("/executors", json={"id": name.replace(".", "-"),
                                            "url": "http://executor.invalid:8080"}
                        ).status_code == 201:
                record["executors"].append(name.replace(".", "-"))
    except httpx.HTTPError:
        pass  # killed: nothing more is acknowledged
    finally:
        api.close()


def lost_after_restart(api: httpx.Client, record: dict) -> dict[str, list]:
    """Each kind of acknowledged write that the restarted service does not have."""
    stored_clusters = {}
    for cluster_id in record["clusters"]:
        answer = api.get(f"/clusters/{cluster_id}")
        stored_clusters[cluster_id] = answer.json() if answer.status_code == 200 else None
    executors = {e["id"] for e in api.get("/executors").json()}
    decisions = {cid: len(api.get("/decisions", params={
        "cluster_id": cid, "action": "update_cluster", "limit": 1000}).json())
        for cid in record["decisions"]}
    return {
        "policies": [uri for uri in record["policies"]
                     if api.get(f"/policies/{uri}").status_code != 200],
        "clusters": [cid for cid, doc in stored_clusters.items() if doc is None],
        "maps": [cid for cid in record["maps"] if api.get(
            "/pre-check-policies", params={"cluster_id": cid}
        ).json()["actionsPolicyMap"].get("add_node") is None],
        "updates": lost_updates(api, record["acked"]),
        "decisions": [cid for cid, count in record["decisions"].items()
                      if decisions[cid] < count],
        "executors": [e for e in record["executors"] if e not in executors],
    }


@pytest.mark.parametrize("reopened", [False, True], ids=["fresh-database", "reopened-database"])
def test_kill_9_of_runtime_and_database_together_loses_no_acknowledged_write(
    tmp_path: Path, reopened: bool
) -> None:
    data_dir = tmp_path / "data"
    shared = [f"group-{i}" for i in range(4)]
    service = service_with_embedded_db(data_dir, tmp_path / "log-1")
    try:
        with service.client() as api:
            allow_uri = prepare(api, shared)
        if reopened:  # every collection exists before the database opens its data again
            service.stop()
            service = service_with_embedded_db(data_dir, tmp_path / "log-2")
        record: dict = {"policies": [], "clusters": [], "maps": [], "acked": {}, "updates": 0,
                        "decisions": Counter(), "executors": []}
        stop = threading.Event()
        writers = [threading.Thread(target=group_writer, args=(
            service.url, service.token, n, stop, record, shared[n % 4], allow_uri))
            for n in range(8)]
        for thread in writers:
            thread.start()
        time.sleep(4)
        os.killpg(service.proc.pid, signal.SIGKILL)  # runtime, workers and database at once
        service.proc.wait()
        stop.set()
        for thread in writers:
            thread.join()
    finally:
        if service.proc.poll() is None:
            service.stop()
    acknowledged = {kind: len(record[kind]) for kind in
                    ("policies", "clusters", "maps", "executors")}
    acknowledged["updates"] = record["updates"]  # each writer's last one is checked
    acknowledged["decisions"] = sum(record["decisions"].values())
    restarted = service_with_embedded_db(data_dir, tmp_path / "log-restarted")
    try:
        with restarted.client() as api:
            lost = lost_after_restart(api, record)
    finally:
        restarted.stop()
    total = sum(acknowledged.values())
    REPORT.append(
        f"kill -9 of runtime + database ({'reopened' if reopened else 'fresh'} database) under "
        f"8 writers: {total} writes acknowledged ({acknowledged}); lost: "
        f"{sum(len(v) for v in lost.values())}")
    assert acknowledged["policies"] > 0 and acknowledged["clusters"] > 0
    assert lost == {kind: [] for kind in lost}, {k: v[:5] for k, v in lost.items() if v}


def test_killed_worker_mid_evaluation_is_a_typed_error_then_replaced(
    database: EmbeddedDatabase, tmp_path: Path
) -> None:
    server = start_server(database, tmp_path, AIOS_POOL_SIZE="1")
    try:
        with server.client() as api:
            spin = api.post("/policies", json={"name": "reliability.spin", "version": "v1",
                                               "code": eval_body("while True:\n    pass"),
                                               "policy_settings": {"timeout_seconds": 20}})
            allow = api.post("/policies", json={"name": "reliability.ok", "version": "v1",
                                                "code": ALLOW_ALL})
            (victim,) = [c.pid for c in psutil.Process(server.proc.pid).children()
                         if "worker" in " ".join(c.cmdline())] or [None]
            assert victim, "the sandbox worker is a child process of the server"
            threading.Timer(0.5, os.kill, (victim, signal.SIGKILL)).start()
            started = time.monotonic()
            crashed = api.post(f"/policies/{spin.json()['policy_rule_uri']}/eval",
                               json={"input_data": {}})
            assert time.monotonic() - started < 10, "the crash is reported, not waited out"
            assert crashed.status_code == 422
            assert crashed.json()["error"]["type"] == "PolicyError"
            assert "stopped unexpectedly" in crashed.json()["error"]["message"]
            for _ in range(5):
                ok = api.post(f"/policies/{allow.json()['policy_rule_uri']}/eval",
                              json={"input_data": 1})
                assert ok.status_code == 200 and ok.json()["result"]["allowed"] is True
            workers = [c.pid for c in psutil.Process(server.proc.pid).children()
                       if "worker" in " ".join(c.cmdline())]
            assert workers and victim not in workers
    finally:
        server.stop()


def test_database_killed_is_a_503_then_recovers(tmp_path: Path) -> None:
    port = free_port()
    database = EmbeddedDatabase(tmp_path / "db", port=port).start()
    server = RuntimeServer(database.uri, "reliability-token", tmp_path / "log",
                           AIOS_POOL_SIZE="1").start()
    try:
        with server.client() as api:
            uri = api.post("/policies", json={"name": "reliability.kept", "version": "v1",
                                              "code": ALLOW_ALL}).json()["policy_rule_uri"]
            os.kill(database.pid, signal.SIGKILL)  # right after the acknowledgement
            down = wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 503)
            assert down, "healthz reports the database down"
            for method, path in (("GET", "/policies"), ("GET", f"/policies/{uri}"),
                                 ("POST", "/clusters/query")):
                answer = api.request(method, path, json={"filter": {}})
                assert answer.status_code == 503, (path, answer.status_code, answer.text)
                assert answer.json() == {"detail": "the database is unavailable; retry shortly"}

            database = EmbeddedDatabase(tmp_path / "db", port=port).start()
            assert wait_for(lambda: httpx.get(f"{server.url}/healthz").status_code == 200)
            assert api.get(f"/policies/{uri}").status_code == 200, "data survived the kill"
        REPORT.append("database kill -9: /healthz 503, API 503 (not 500), recovered on restart "
                      "with every acknowledged write")
    finally:
        server.stop()
        database.stop()


def wait_for(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False

