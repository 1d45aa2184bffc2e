"""An executor with a database of its own reads the network's policies from the policies
system (AIOS_POLICY_SOURCE_URL): two real runtime processes on two embedded databases.

The policies system has a published policy and a reader token; the executor fetches a
policy on its first miss, keeps it, and answers from it with the source gone. A source that
answers another policy or code that does not match its hash is refused, and a source that
cannot be asked fails the evaluation closed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from conftest import EXAMPLES_DIR, RuntimeServer
from pymongo import MongoClient

from policy_runtime.embedded_db import EmbeddedDatabase

EXAMPLE = EXAMPLES_DIR / "add-node-gpu-minimum"
ALLOWED = json.loads((EXAMPLE / "cases" / "allowed_two_a100.json").read_text())
DENIED = json.loads((EXAMPLE / "cases" / "denied_no_gpu.json").read_text())


@pytest.fixture(scope="module")
def executor_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedDatabase]:
    """The executor's own database: another database process than the policies system's."""
    with EmbeddedDatabase(tmp_path_factory.mktemp("executor-db")) as database:
        yield database


@pytest.fixture()
def policies_system(embedded_db: EmbeddedDatabase, tmp_path: Path) -> Iterator[RuntimeServer]:
    server = RuntimeServer(
        embedded_db.uri, secrets.token_urlsafe(16), tmp_path / "policies-system.log",
        AIOS_RUN_MODES="policies", AIOS_DB_NAME=f"source_{secrets.token_hex(4)}",
    ).start()
    yield server
    server.stop()


def publish(api: httpx.Client, unique_name: str, suffix: str = "") -> str:
    document = json.loads((EXAMPLE / "policy.json").read_text())
    document.update(name=unique_name + suffix, code=(EXAMPLE / "policy.py").read_text())
    response = api.post("/policies", json=document)
    assert response.status_code == 201, response.text
    return response.json()["policy_rule_uri"]


def reader_token_file(api: httpx.Client, directory: Path) -> Path:
    """A token with policies:read on the policies system, as a mounted Secret holds it."""
    name = f"executor-reader-{secrets.token_hex(4)}"
    response = api.post("/tokens", json={"name": name, "role": "reader"})
    assert response.status_code == 201, response.text
    path = directory / "source-token"
    path.write_text(response.json()["token"] + "\n")
    return path


def start_executor(
    database: EmbeddedDatabase, tmp_path: Path, source_url: str, token_file: Path,
    **env: str,
) -> RuntimeServer:
    return RuntimeServer(
        database.uri, secrets.token_urlsafe(16), tmp_path / f"executor-{secrets.token_hex(3)}.log",
        AIOS_RUN_MODES="policies", AIOS_DB_NAME=f"executor_{secrets.token_hex(4)}",
        AIOS_POLICY_SOURCE_URL=source_url, AIOS_POLICY_SOURCE_TOKEN_FILE=str(token_file),
        AIOS_REMOTE_TIMEOUT_SECONDS="3", **env,
    ).start()


def evaluate(executor: RuntimeServer, uri: str, case: dict) -> httpx.Response:
    with executor.client() as api:
        return api.post(f"/policies/{uri}/eval", json={"input_data": case["input_data"]})


def source_reads(source: RuntimeServer, uri: str) -> int:
    """How many times the source's access log shows a read of ``uri``."""
    path = f"GET /policies/{uri}"
    encoded = f"GET /policies/{uri.replace(':', '%3A')}"
    return sum(1 for line in source.log_path.read_text().splitlines()
               if f"{path} " in line or f"{encoded} " in line)


def test_a_miss_is_fetched_once_kept_and_served_without_the_source(
    policies_system: RuntimeServer, executor_db: EmbeddedDatabase, tmp_path: Path,
    unique_name: str,
) -> None:
    with policies_system.client() as source_api:
        uri = publish(source_api, unique_name)
        other = publish(source_api, unique_name, "-other")
        token_file = reader_token_file(source_api, tmp_path)
        source_document = source_api.get(f"/policies/{uri}").json()
    reads_before = source_reads(policies_system, uri)  # the test's own read just now
    executor = start_executor(executor_db, tmp_path, policies_system.url, token_file)
    try:
        # Eight concurrent first evaluations: one read of the source, eight decisions.
        with ThreadPoolExecutor(8) as threads:
            answers = list(threads.map(lambda _: evaluate(executor, uri, ALLOWED), range(8)))
        assert [a.status_code for a in answers] == [200] * 8, answers[0].text
        assert all(a.json()["result"] == ALLOWED["expected"] for a in answers)
        assert source_reads(policies_system, uri) == reads_before + 1

        stored = MongoClient(executor_db.uri)[executor._env["AIOS_DB_NAME"]]["policies"].find_one(
            {"policy_rule_uri": uri})
        assert stored["code"] == source_document["code"]
        assert stored["code_sha256"] == source_document["code_sha256"]
        assert stored["fetched_from"] == policies_system.url

        missing = evaluate(executor, f"{unique_name}-nowhere:v9.9.9-stable", ALLOWED)
        assert missing.status_code == 404
        assert policies_system.url in missing.json()["detail"]

        # A token the source refuses: the evaluation fails closed, naming the source.
        good_token = token_file.read_text()
        token_file.write_text("not-a-token\n")
        refused = evaluate(executor, other, ALLOWED)
        assert refused.status_code == 502, refused.text
        assert re.search(rf"policy source {re.escape(policies_system.url)} answered 401",
                         refused.json()["detail"])
        token_file.write_text(good_token)

        policies_system.stop()
        kept = evaluate(executor, uri, DENIED)
        assert kept.status_code == 200, kept.text
        assert kept.json()["result"] == DENIED["expected"]
        gone = evaluate(executor, other, ALLOWED)
        assert gone.status_code == 502, gone.text
        detail = gone.json()["detail"]
        assert f"policy source {policies_system.url} cannot be reached" in detail
        assert "failing closed" in detail
    finally:
        executor.stop()


class TamperingSource(BaseHTTPRequestHandler):
    """A stand-in policies system: ``.../tampered-code:...`` answers code that does not
    match its hash, ``.../other-uri:...`` answers the right code under another URI,
    ``.../other-name:...`` the URI asked for with another name in the document,
    ``.../oversized:...`` a sound document larger than the executor reads."""

    code = (EXAMPLE / "policy.py").read_text()

    def do_GET(self) -> None:
        uri = unquote(self.path.removeprefix("/policies/"))
        name, _, release = uri.rpartition(":")
        version, _, tag = release.partition("-")
        document = {**json.loads((EXAMPLE / "policy.json").read_text()),
                    "name": name, "version": version, "release_tag": tag,
                    "policy_rule_uri": uri, "code": self.code,
                    "code_sha256": hashlib.sha256(self.code.encode()).hexdigest()}
        if "tampered-code" in uri:
            document["code"] = self.code.replace("min_gpus", "min_gpus_changed")
        elif "other-uri" in uri:
            document["policy_rule_uri"] = "aiosv1.policies.someone.else:v1.0.0-stable"
        elif "other-name" in uri:  # the URI asked for, but made of another name
            document["name"] = "aiosv1.policies.someone.else"
        elif "oversized" in uri:
            document["description"] = "x" * 200_000
        body = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_tampered_source_is_refused(executor_db: EmbeddedDatabase, tmp_path: Path) -> None:
    stand_in = ThreadingHTTPServer(("127.0.0.1", 0), TamperingSource)
    threading.Thread(target=stand_in.serve_forever, daemon=True).start()
    token_file = tmp_path / "token"
    token_file.write_text("any\n")
    source_url = f"http://127.0.0.1:{stand_in.server_address[1]}"
    # the answer may be at most AIOS_MAX_BODY_BYTES + AIOS_MAX_CODE_BYTES: 128 KiB here
    executor = start_executor(executor_db, tmp_path, source_url, token_file,
                              AIOS_MAX_BODY_BYTES="65536", AIOS_MAX_CODE_BYTES="65536")
    try:
        tampered = evaluate(executor, "aiosv1.policies.x.tampered-code:v1.0.0-stable", ALLOWED)
        assert tampered.status_code == 502, tampered.text
        assert "does not hash to its code_sha256; refused" in tampered.json()["detail"]
        other = evaluate(executor, "aiosv1.policies.x.other-uri:v1.0.0-stable", ALLOWED)
        assert other.status_code == 502, other.text
        assert "answered policy_rule_uri 'aiosv1.policies.someone.else:v1.0.0-stable'" in (
            other.json()["detail"])
        renamed = evaluate(executor, "aiosv1.policies.x.other-name:v1.0.0-stable", ALLOWED)
        assert renamed.status_code == 502, renamed.text
        assert "make another URI; refused" in renamed.json()["detail"]
        oversized = evaluate(executor, "aiosv1.policies.x.oversized:v1.0.0-stable", ALLOWED)
        assert oversized.status_code == 502, oversized.text
        assert "answered more than 131072 bytes" in oversized.json()["detail"]
        # The stand-in answers a sound document for any other URI: the executor runs it,
        # so the refusals above were the checks, not a broken stand-in.
        sound = evaluate(executor, "aiosv1.policies.x.sound:v1.0.0-stable", ALLOWED)
        assert sound.status_code == 200, sound.text
        stored = MongoClient(executor_db.uri)[executor._env["AIOS_DB_NAME"]]["policies"]
        assert sorted(d["policy_rule_uri"] for d in stored.find()) == [
            "aiosv1.policies.x.sound:v1.0.0-stable"]
    finally:
        executor.stop()
        stand_in.shutdown()


@pytest.mark.parametrize(
    ("token_file", "named"),
    [
        (None, "AIOS_POLICY_SOURCE_URL is set but AIOS_POLICY_SOURCE_TOKEN_FILE is not"),
        ("missing", "AIOS_POLICY_SOURCE_TOKEN_FILE="),
        ("empty", "is empty"),
    ],
)
def test_the_executor_refuses_to_start_without_its_source_token(
    tmp_path: Path, token_file: str | None, named: str,
) -> None:
    env = {**os.environ, "AIOS_API_TOKEN": secrets.token_urlsafe(16),
           "AIOS_POLICY_SOURCE_URL": "http://127.0.0.1:9"}
    env.pop("AIOS_POLICY_SOURCE_TOKEN_FILE", None)
    if token_file is not None:
        path = tmp_path / "token"
        if token_file == "empty":
            path.write_text("\n")
        env["AIOS_POLICY_SOURCE_TOKEN_FILE"] = str(path)
    done = subprocess.run(
        [sys.executable, "-m", "policy_runtime", "serve", "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert named in done.stderr
    if token_file == "missing":
        assert "cannot be read" in done.stderr


def test_the_policies_system_forwards_to_an_executor_on_its_own_database(
    policies_system: RuntimeServer, executor_db: EmbeddedDatabase, tmp_path: Path,
    unique_name: str,
) -> None:
    """Upstream's POST /executor/{id}/execute_policy: the policies system forwards with the
    executor's own token; the executor has not got the policy and reads it from there."""
    executor_id = f"exec-{secrets.token_hex(3)}"
    with policies_system.client() as source_api:
        uri = publish(source_api, unique_name)
        token_file = reader_token_file(source_api, tmp_path)
        executor = RuntimeServer(
            executor_db.uri, "unused", tmp_path / "executor.log",
            AIOS_RUN_MODES="policies", AIOS_DB_NAME=f"executor_{secrets.token_hex(4)}",
            AIOS_POLICY_SOURCE_URL=policies_system.url,
            AIOS_POLICY_SOURCE_TOKEN_FILE=str(token_file),
        )
        registered = source_api.post("/executors", json={"id": executor_id, "url": executor.url})
        assert registered.status_code == 201, registered.text
        # The executor serves with the token the policies system issued for it.
        executor.token = registered.json()["token"]
        executor._env["AIOS_API_TOKEN"] = executor.token
        executor.start()
        try:
            for case in (ALLOWED, DENIED):
                answer = source_api.post(
                    f"/executor/{executor_id}/execute_policy",
                    json={"policy_rule_uri": uri, "input_data": case["input_data"]},
                )
                assert answer.status_code == 200, answer.text
                assert answer.json() == {"success": True, "data": case["expected"]}
            missing = source_api.post(
                f"/executor/{executor_id}/execute_policy",
                json={"policy_rule_uri": f"{unique_name}-nowhere:v1.0.0-stable",
                      "input_data": ALLOWED["input_data"]},
            )
            assert missing.status_code == 404, missing.text
            assert missing.json()["success"] is False
            assert policies_system.url in missing.json()["message"]
        finally:
            executor.stop()
            source_api.delete(f"/executors/{executor_id}")
    assert source_reads(policies_system, uri) == 1
