"""Hostile requests against the real service process: none stalls or crashes it.

Every attack of issue 28 is one row of a table: it is sent to a real ``aios-policy
serve`` while a second client polls ``/healthz`` and evaluates a normal policy. Each row
asserts the answer (a 4xx naming the problem, never a 5xx), that the other client was
answered within 1 s throughout, that no sandbox worker died and that the server's memory
did not balloon.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import secrets
import socket
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import SEED_CLUSTER, RuntimeServer
from pymongo import MongoClient
from test_governance_api import publish_example
from test_package_bombs import (
    MiB,
    long_name_bomb,
    patched_zip,
    pax_bomb,
    tar_bomb,
    zip_bomb,
)

from policy_runtime.embedded_db import EmbeddedDatabase

DB_NAME = "aios_hostile"
READ_TIMEOUT = 2  # AIOS_REQUEST_READ_TIMEOUT_SECONDS of the server under attack
LIVENESS_SECONDS = 1.0  # the other client is answered within this while an attack runs
RSS_GROWTH_LIMIT = 200 * MiB
NORMAL_POLICY = """
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        return {"allowed": True, "input_data": input_data}
"""


@pytest.fixture(scope="module")
def target(
    embedded_db: EmbeddedDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeServer]:
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    server = RuntimeServer(
        embedded_db.uri, secrets.token_urlsafe(32), log,
        AIOS_DB_NAME=DB_NAME, AIOS_REQUEST_READ_TIMEOUT_SECONDS=str(READ_TIMEOUT),
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(target: RuntimeServer) -> Iterator[httpx.Client]:
    with target.client() as client:
        yield client


def publish(api: httpx.Client, **fields: object) -> str:
    body = {"name": f"aiosv1.policies.test.hostile-{secrets.token_hex(4)}", "version": "v1",
            "code": NORMAL_POLICY, **fields}
    response = api.post("/policies", json=body)
    assert response.status_code == 201, response.text
    return response.json()["policy_rule_uri"]


@pytest.fixture(scope="module")
def normal_uri(api: httpx.Client) -> str:
    return publish(api)


@pytest.fixture(scope="module")
def cluster_id(api: httpx.Client) -> str:
    document = {**copy.deepcopy(json.loads(SEED_CLUSTER.read_text())),
                "id": f"hostile-{secrets.token_hex(4)}"}
    assert api.post("/clusters", json=document).status_code == 201
    return document["id"]


# -- watching the server while an attack runs ------------------------------------------
class OtherClient(threading.Thread):
    """Polls /healthz and evaluates a normal policy, recording the slowest answer."""

    def __init__(self, server: RuntimeServer, uri: str) -> None:
        super().__init__(daemon=True)
        self.server, self.uri = server, uri
        self.slowest = 0.0
        self.failures: list[str] = []
        self.rounds = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with self.server.client() as client:
            while not self.stop.is_set():
                for method, path, body in (("GET", "/healthz", None),
                                           ("POST", f"/policies/{self.uri}/eval",
                                            {"input_data": {"n": self.rounds}})):
                    started = time.monotonic()
                    try:
                        response = client.request(method, path, json=body, timeout=10)
                        if response.status_code != 200:
                            self.failures.append(f"{path}: {response.status_code}")
                    except httpx.HTTPError as exc:
                        self.failures.append(f"{path}: {exc!r}")
                    self.slowest = max(self.slowest, time.monotonic() - started)
                self.rounds += 1
                time.sleep(0.05)


def workers(server: RuntimeServer) -> set[int]:
    assert server.proc is not None
    return {child.pid for child in psutil.Process(server.proc.pid).children()
            if "worker" in " ".join(child.cmdline())}


def rss(server: RuntimeServer) -> int:
    assert server.proc is not None
    return psutil.Process(server.proc.pid).memory_info().rss


@contextmanager
def watched(server: RuntimeServer, uri: str) -> Iterator[None]:
    """Run the block as an attack: the other client stays served, workers and memory stay."""
    before_workers, before_rss = workers(server), rss(server)
    other = OtherClient(server, uri)
    other.start()
    while other.rounds < 1 and other.is_alive():
        time.sleep(0.01)
    try:
        yield
        time.sleep(0.2)  # the other client also gets answered right after the attack
    finally:
        other.stop.set()
        other.join(timeout=30)
    assert not other.failures, other.failures
    assert other.slowest < LIVENESS_SECONDS, (
        f"/healthz or a normal evaluation took {other.slowest:.2f} s during the attack")
    assert workers(server) == before_workers, "a sandbox worker died"
    assert rss(server) - before_rss < RSS_GROWTH_LIMIT, "the server's memory ballooned"


# -- the attacks: each returns (status, text of the answer) ----------------------------
Attack = Callable[[RuntimeServer, httpx.Client, str], tuple[int, str]]


def answer(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.text


def archive(data: bytes, route: str = "/policies") -> Attack:
    def send(server: RuntimeServer, api: httpx.Client, cluster: str) -> tuple[int, str]:
        return answer(api.post(route, json={
            "name": f"aiosv1.policies.test.bomb-{secrets.token_hex(4)}", "version": "v1",
            "code_archive": base64.b64encode(data).decode()}))
    return send


def evaluation(schema: dict, input_data: object) -> Attack:
    def send(server: RuntimeServer, api: httpx.Client, cluster: str) -> tuple[int, str]:
        uri = publish(api, policy_input_schema=schema)
        return answer(api.post(f"/policies/{uri}/eval", json={"input_data": input_data}))
    return send


def schema_publish(schema: dict) -> Attack:
    def send(server: RuntimeServer, api: httpx.Client, cluster: str) -> tuple[int, str]:
        return answer(api.post("/policies", json={
            "name": f"aiosv1.policies.test.schema-{secrets.token_hex(4)}", "version": "v1",
            "code": NORMAL_POLICY, "policy_input_schema": schema}))
    return send


def management(action: str, data: object) -> Attack:
    def send(server: RuntimeServer, api: httpx.Client, cluster: str) -> tuple[int, str]:
        return answer(api.post("/mgmt", params={"cluster_id": cluster}, json={
            "service": "stability_checker", "mgmt_action": action, "mgmt_data": data}))
    return send


def _status_of(raw: bytes) -> tuple[int, str]:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", raw)
    return (int(match.group(1)) if match else 0), raw.decode("latin-1")


def raw_request(payload: bytes) -> Attack:
    """Send bytes as they are and read the answer (the server may close meanwhile)."""
    def send(server: RuntimeServer, api: httpx.Client, cluster: str) -> tuple[int, str]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            try:
                sock.sendall(payload)
            except OSError:
                pass  # refused before all of it was read
            return _status_of(_read_all(sock))
    return send


def _read_all(sock: socket.socket) -> bytes:
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except OSError:
        pass
    return received


def header_flood(count: int = 3, size: int = 100 * MiB) -> Attack:
    """``count`` header values of ``size`` bytes each, streamed until the server refuses."""
    def send(server: RuntimeServer, api: httpx.Client, cluster: str) -> tuple[int, str]:
        sent = 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            try:
                sock.sendall(b"GET /policies HTTP/1.1\r\nHost: x\r\n")
                chunk = b"a" * MiB
                for index in range(count):
                    sock.sendall(b"X-Flood-%d: " % index)
                    for _ in range(size // MiB):
                        sock.sendall(chunk)
                        sent += len(chunk)
                    sock.sendall(b"\r\n")
            except OSError:
                pass
            received = _read_all(sock)
        assert sent < 64 * MiB, f"the server kept reading the headers ({sent} bytes)"
        # the answer may be lost to the reset of the unread upload; a refusal it must be
        status, text = _status_of(received)
        return (status, text) if received else (431, "connection closed: refused")
    return send


def slow_client(head: bytes, drip: bytes = b"", every: float = 0.2) -> Attack:
    """Send ``head`` (``{token}`` replaced by the API token), then ``drip`` byte by byte;
    the server must hang up by itself."""
    def send(server: RuntimeServer, api: httpx.Client, cluster: str) -> tuple[int, str]:
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(head.replace(b"{token}", server.token.encode()))
            sock.settimeout(every)
            received = b""
            for byte in [drip[i:i + 1] for i in range(len(drip))] or [b""] * 200:
                try:
                    if byte:
                        sock.sendall(byte)
                    chunk = sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    break
                if not chunk:
                    break
                received += chunk
            else:
                pytest.fail("the server kept the slow connection open")
        held = time.monotonic() - started
        assert held < READ_TIMEOUT + 5, f"the slow connection was held {held:.1f} s"
        status, text = _status_of(received)
        return (status, text) if received else (408, "connection closed")
    return send


BIG_HEADER = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n"
MANY_HEADERS = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                + b"".join(b"X-%d: a\r\n" % i for i in range(150)) + b"\r\n")
LONG_URL = b"GET /" + b"a" * (100 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n"
UNIQUE_SCHEMA = {"type": "object", "properties": {"items": {"type": "array", "uniqueItems": True}}}
UNIQUE_ITEMS = [{"id": i, "name": f"n{i}"} for i in range(3000)]
SLOW_SCHEMA = {"type": "array", "items": {"anyOf": [
    *({"type": "object", "required": [f"k{i}"]} for i in range(200)), {"type": "object"}]}}

# The widest schema and value that are still validated on the event loop rather than in
# a thread (evaluation.INLINE_VALIDATION_WORK): every object of the value is checked
# against every property of the schema.
WIDE_SCHEMA = {"type": "array", "items": {"type": "object", "properties": {
    f"p{i}": {"type": "integer"} for i in range(50)}}}
WIDE_VALUE = [{}] * 600 + [{"p1": "x"}]

ATTACKS: list = [
    # 1. archives
    pytest.param(archive(tar_bomb(64 * MiB)), 422, "decompresses to more than",
                 id="tar.bz2-claims-64MiB"),
    pytest.param(archive(tar_bomb(2 << 30)), 422, "decompresses to more than",
                 id="tar.bz2-claims-2GiB"),
    pytest.param(archive(tar_bomb(64 * MiB, "gz")), 422, "decompresses to more than",
                 id="tar.gz-claims-64MiB"),
    pytest.param(archive(tar_bomb(64 * MiB, "xz"), "/policy"), 422,
                 "decompresses to more than", id="tar.xz-upstream-route"),
    pytest.param(archive(long_name_bomb()), 422, "long-name header", id="longlink-claims-1GiB"),
    pytest.param(archive(pax_bomb()), 422, "pax header", id="pax-header-1MiB"),
    pytest.param(archive(patched_zip(flag_bits=0x1)), 422, "encrypted", id="zip-encrypted"),
    pytest.param(archive(patched_zip(method=99)), 422, "compression method 99",
                 id="zip-unsupported-method"),
    pytest.param(archive(zip_bomb(zipfile.ZIP_BZIP2)), 413, "code limit", id="zip-bzip2-64MiB"),
    # 2. schema validation
    pytest.param(evaluation(UNIQUE_SCHEMA, {"items": [*UNIQUE_ITEMS, UNIQUE_ITEMS[7]]}), 422,
                 "non-unique", id="uniqueItems-3000-objects"),
    pytest.param(evaluation({"type": "object", "properties": {
        "name": {"type": "string", "pattern": "^(a+)+$"}}}, {"name": "a" * 40 + "!"}),
        422, "does not match", id="catastrophic-pattern"),
    pytest.param(evaluation({"type": "object", "patternProperties": {"^(a|aa)+$": {
        "type": "integer"}}}, {"a" * 60 + "!": 1, "aaaa": "x"}), 422, "is not of type",
        id="catastrophic-patternProperties"),
    pytest.param(evaluation(SLOW_SCHEMA, [{"v": 1}] * 20000), 422, "took longer than",
                 id="schema-time-bound"),
    pytest.param(evaluation(WIDE_SCHEMA, WIDE_VALUE), 422, "[600].p1: 'x' is not of type",
                 id="inline-validation-widest"),
    pytest.param(schema_publish({"type": "string", "pattern": "^(a)\\1$"}), 422,
                 "linear time", id="pattern-backreference"),
    pytest.param(schema_publish({"type": "object", "patternProperties": {"^(?=x)": {}}}), 422,
                 "linear time", id="patternProperties-lookahead"),
    pytest.param(schema_publish({"type": "object", "patternProperties": {"^(a+)+$": {}},
                                 "unevaluatedProperties": False}), 422,
                 "unevaluatedProperties cannot be combined", id="unevaluatedProperties-patterns"),
    # a subschema naming a dialect would be validated by jsonschema's stock validator,
    # with Python's backtracking re and no time limit
    pytest.param(schema_publish({"type": "object", "properties": {"a": {
        "$schema": "https://json-schema.org/draft/2020-12/schema", "pattern": "^(a+)+$"}}}),
        422, "$schema is allowed only at the top", id="nested-dialect-pattern"),
    pytest.param(schema_publish({"$ref": "#/$defs/x", "$defs": {"x": {
        "$schema": "http://json-schema.org/draft-07/schema#", "pattern": "^(a|aa)+$"}}}),
        422, "$schema is allowed only at the top", id="nested-dialect-behind-ref"),
    # 5. connections
    pytest.param(header_flood(), 431, "", id="three-100MB-headers"),
    pytest.param(raw_request(BIG_HEADER), 431, "65536 bytes", id="header-over-limit"),
    pytest.param(raw_request(MANY_HEADERS), 431, "more than 100 header fields",
                 id="too-many-headers"),
    pytest.param(raw_request(LONG_URL), 431, "65536 bytes", id="long-url"),
    pytest.param(slow_client(b"GET /healthz HTTP/1.1\r\n", b"X-Slow: " + b"a" * 100), 408,
                 "", id="slowloris-headers"),
    pytest.param(slow_client(b""), 408, "", id="idle-connection"),
    pytest.param(slow_client(b"POST /policies HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                             b"Authorization: Bearer {token}\r\n"
                             b"Content-Type: application/json\r\n\r\n{", b" " * 100),
                 408, "", id="slow-body"),
    # 6. management values
    pytest.param(management("set_interval", {"interval_seconds": 1e300}), 422,
                 "interval_seconds", id="interval-1e300"),
    pytest.param(management("set_interval", {"interval_seconds": -1}), 422,
                 "from 0.2 to 86400", id="interval-negative"),
    pytest.param(management("set_interval", {"interval_seconds": 1e-9}), 422,
                 "interval_seconds", id="interval-tiny"),
    pytest.param(management("set_interval", {"interval_seconds": "60"}), 422,
                 "interval_seconds", id="interval-string"),
    pytest.param(management("set_interval", {}), 422, "interval_seconds", id="interval-missing"),
    pytest.param(management("set_policy", {"policy_rule_uri": "x" * 100_000}), 422,
                 "policy_rule_uri", id="policy-uri-100k"),
    pytest.param(management("set_policy", {"policy_rule_uri": "a:v1", "parameters": [1]}), 422,
                 "parameters", id="parameters-not-an-object"),
]


@pytest.mark.parametrize(("attack", "status", "needle"), ATTACKS)
def test_attack_is_refused_while_others_are_served(
    target: RuntimeServer, api: httpx.Client, normal_uri: str, cluster_id: str,
    attack: Attack, status: int, needle: str,
) -> None:
    with watched(target, normal_uri):
        got, text = attack(target, api, cluster_id)
    assert got == status, text[:500]
    assert needle in text, text[:500]


def test_normal_requests_still_pass(api: httpx.Client) -> None:
    """The bounds leave ordinary traffic alone: a 600 KiB body, 60 headers of 500 bytes."""
    uri = publish(api, policy_input_schema=UNIQUE_SCHEMA)
    headers = {f"X-Extra-{i}": "v" * 500 for i in range(60)}
    items = [{"id": i, "name": f"n{i}"} for i in range(25_000)]
    response = api.post(f"/policies/{uri}/eval", json={"input_data": {"items": items}},
                        headers=headers)
    assert response.status_code == 200 and response.json()["ok"] is True, response.text[:300]
    assert api.post(f"/policies/{uri}/eval", json={"input_data": {"items": [
        {"a": 1}, {"a": 1.0}]}}).status_code == 422, "1 and 1.0 are equal in JSON"
    assert api.post(f"/policies/{uri}/eval", json={"input_data": {"items": [
        1, True]}}).status_code == 200, "true is not 1 in JSON"


def test_a_lease_far_in_the_future_heals(
    embedded_db: EmbeddedDatabase, api: httpx.Client, cluster_id: str, tmp_path: Path
) -> None:
    """The state ``set_interval 1e300`` left behind (interval 1e300, a lease expiring at
    2e300 held by a runner that is gone) no longer stops the stability checker."""
    uri = publish_example(api, "cluster-stability")
    assert api.post("/mgmt", params={"cluster_id": cluster_id}, json={
        "service": "stability_checker", "mgmt_action": "set_policy",
        "mgmt_data": {"policy_rule_uri": uri}}).status_code == 200
    with MongoClient(embedded_db.uri) as mongo:
        db = mongo[DB_NAME]
        updated = db["clusters"].update_one(
            {"id": cluster_id}, {"$set": {"config.stabilityChecker.interval": 1e300}})
        assert updated.matched_count == 1
        db["leases"].replace_one(
            {"_id": f"stability:{cluster_id}"},
            {"_id": f"stability:{cluster_id}", "holder": "gone:1", "expires_at": 2e300},
            upsert=True)
    controller = RuntimeServer(
        embedded_db.uri, secrets.token_urlsafe(32), tmp_path / "controller.log",
        AIOS_DB_NAME=DB_NAME, AIOS_CLUSTER_ID=cluster_id,
    ).start()
    try:
        deadline = time.monotonic() + 30
        with controller.client() as client:
            while time.monotonic() < deadline:
                latest = client.get("/check_stability", params={"cluster_id": cluster_id})
                if latest.status_code == 200:
                    break
                time.sleep(0.2)
        assert latest.status_code == 200, "the stability checker never ran"
        assert latest.json()["runner"] != "gone:1"
        with MongoClient(embedded_db.uri) as mongo:
            lease = mongo[DB_NAME]["leases"].find_one({"_id": f"stability:{cluster_id}"})
        assert lease["holder"] == latest.json()["runner"]
        assert lease["expires_at"] < time.time() + 3 * 86_400
    finally:
        controller.stop()
