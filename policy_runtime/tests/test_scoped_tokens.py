"""Scoped tokens end to end: the token store, revocation across replicas, bad input, audit,
secrets kept out of logs, executor tokens and the executor URL allow-list."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import httpx
import pytest
from conftest import RuntimeServer, seed_cluster
from policy_sources import ALLOW_ALL
from pymongo import MongoClient

from policy_runtime.auth.tokens import token_hash
from policy_runtime.embedded_db import EmbeddedDatabase
from policy_runtime.executors.allowlist import AllowList, UrlNotAllowed


def make_token(api: httpx.Client, role: str, **fields: object) -> tuple[str, str]:
    name = f"t-{role}-{secrets.token_hex(4)}"
    response = api.post("/tokens", json={"name": name, "role": role, **fields})
    assert response.status_code == 201, response.text
    return name, response.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def replica(embedded_db: EmbeddedDatabase, server: RuntimeServer,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """A second runtime process on the same database (another token in its environment)."""
    log = tmp_path_factory.mktemp("replica") / "replica.log"
    runtime = RuntimeServer(embedded_db.uri, secrets.token_urlsafe(32), log).start()
    yield runtime
    runtime.stop()


# -- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "field", "words"), [
    ({"role": "superuser"}, "role", "unknown role"),
    ({"role": "reader", "clusters": ["c-1"]}, "clusters", "takes no cluster scope"),
    ({"role": "operator", "policy_prefixes": ["aiosv1."]}, "policy_prefixes", "no policy"),
    ({"role": "cluster-owner"}, "clusters", "at least one cluster"),
    ({"role": "reader", "expires": "2020-01-01T00:00:00Z"}, "expires", "in the past"),
    ({"role": "reader", "expires": "tomorrow"}, "expires", ""),
    ({"role": "reader", "name": "no spaces please"}, "name", ""),
    ({"role": "reader", "colour": "red"}, "colour", ""),
])
def test_bad_token_requests_are_422_naming_the_field(
    api: httpx.Client, body: dict, field: str, words: str
) -> None:
    response = api.post("/tokens", json={"name": f"bad-{secrets.token_hex(4)}", **body})
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert any(error["loc"][-1] == field and words in error["msg"] for error in errors), errors


def test_duplicate_name_is_422_naming_the_name(api: httpx.Client) -> None:
    name, _ = make_token(api, "reader")
    again = api.post("/tokens", json={"name": name, "role": "reader"})
    assert again.status_code == 422
    assert again.json()["detail"][0]["loc"] == ["body", "name"]
    assert "exists already" in again.json()["detail"][0]["msg"]


# -- storage: a hash, shown once ------------------------------------------------------------
def test_token_is_stored_as_a_hash_and_shown_once(
    api: httpx.Client, embedded_db: EmbeddedDatabase, server: RuntimeServer
) -> None:
    name, token = make_token(api, "reader")
    record = MongoClient(embedded_db.uri)["aios_test"]["api_tokens"].find_one({"name": name})
    assert record["token_sha256"] == token_hash(token)
    assert token not in json.dumps(record, default=str)
    listed = api.get("/tokens").json()
    mine = next(t for t in listed if t["name"] == name)
    assert {"name", "role", "clusters", "policy_prefixes", "created", "expires", "last_used",
            "revoked"} <= set(mine)
    assert "token" not in mine and "token_sha256" not in mine
    assert token not in api.get("/tokens").text and token not in api.get(f"/tokens/{name}").text
    assert httpx.get(f"{server.url}/policies", headers=bearer(token)).status_code == 200
    assert api.get(f"/tokens/{name}").json()["last_used"] is not None


# -- revocation and expiry on every replica -------------------------------------------------
def _status_within(url: str, token: str, expected: int, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if httpx.get(url, headers=bearer(token)).status_code == expected:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer {expected} within {seconds} s")


def test_revocation_reaches_every_replica_within_a_second(
    api: httpx.Client, server: RuntimeServer, replica: RuntimeServer
) -> None:
    name, token = make_token(api, "reader")
    for runtime in (server, replica):
        assert httpx.get(f"{runtime.url}/policies", headers=bearer(token)).status_code == 200
    revoked_at = time.monotonic()
    assert api.delete(f"/tokens/{name}").json()["revoked"] is not None
    for runtime in (server, replica):
        _status_within(f"{runtime.url}/policies", token, 401, 1.5)
    assert time.monotonic() - revoked_at < 1.5
    refused = httpx.get(f"{replica.url}/policies", headers=bearer(token))
    assert refused.headers["www-authenticate"] == "Bearer"
    assert api.delete(f"/tokens/{name}").status_code == 404, "revoked once"
    renewed = api.post("/tokens", json={"name": name, "role": "reader"})
    assert renewed.status_code == 201, "a revoked token's name can be given to a new one"
    assert httpx.get(f"{replica.url}/policies", headers=bearer(token)).status_code == 401
    assert httpx.get(f"{replica.url}/policies",
                     headers=bearer(renewed.json()["token"])).status_code == 200


def test_expired_token_is_refused_on_every_replica(
    api: httpx.Client, server: RuntimeServer, replica: RuntimeServer
) -> None:
    expires = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    _, token = make_token(api, "reader", expires=expires)
    for runtime in (server, replica):
        assert httpx.get(f"{runtime.url}/policies", headers=bearer(token)).status_code == 200
    time.sleep(2.1)
    for runtime in (server, replica):
        assert httpx.get(f"{runtime.url}/policies", headers=bearer(token)).status_code == 401


def test_bootstrap_token_is_admin_and_each_replica_keeps_its_own(
    server: RuntimeServer, replica: RuntimeServer
) -> None:
    assert httpx.get(f"{server.url}/tokens", headers=bearer(server.token)).status_code == 200
    assert httpx.get(f"{replica.url}/tokens", headers=bearer(server.token)).status_code == 401


# -- audit, decision log, and secrets kept out of everything --------------------------------
def test_writes_and_decisions_name_the_token_never_its_secret(
    api: httpx.Client, server: RuntimeServer
) -> None:
    cid = f"aud-{secrets.token_hex(3)}"
    assert api.post("/clusters", json=seed_cluster(cid)).status_code == 201
    name, token = make_token(api, "cluster-owner", clusters=[cid],
                             policy_prefixes=[f"aiosv1.policies.aud-{cid}."])
    seen: list[str] = []
    with httpx.Client(base_url=server.url, headers=bearer(token)) as owner:
        for response in (
            owner.patch(f"/clusters/update/{cid}", json={"tags": ["audited"]}),
            owner.post("/pre-check/add_node", params={"cluster_id": cid}, json={}),
            owner.post("/pre-check/add_node", params={"cluster_id": "elsewhere"}, json={}),
            owner.post("/policies", json={"name": "aiosv1.policies.x", "version": "v1",
                                          "code": ALLOW_ALL}),
            owner.post("/policies", json={"name": f"aiosv1.policies.aud-{cid}.p",
                                          "version": "v1", "code": "not python"}),
            owner.post("/clusters", json={"id": cid}),
            owner.put(f"/clusters/{cid}", json={"$bogus": 1}),
            owner.get("/tokens"),
            owner.get(f"/clusters/{cid}"),
            owner.get("/policies/nope:v1"),
        ):
            seen.append(response.text + json.dumps(dict(response.headers)))
        decisions = owner.get("/decisions").json()
    assert all(token not in text for text in seen)
    assert decisions and {d["cluster_id"] for d in decisions} == {cid}
    assert decisions[0]["token"] == name and token not in json.dumps(decisions)
    audit = api.get("/audit", params={"token": name}).json()
    patched = [a for a in audit if a["method"] == "PATCH"]
    assert patched and patched[0]["path"] == f"/clusters/update/{cid}"
    assert patched[0]["status"] == 200 and patched[0]["permission"] == "clusters:write"
    assert [a["status"] for a in audit if a["method"] == "PUT"] == [400], "failures too"
    refused = [a for a in audit if a["path"] == "/pre-check/add_node" and a["status"] == 403]
    assert len(refused) == 1, "the attempt on a cluster outside the scope"
    assert not [a for a in audit if a["method"] == "GET"], "reads are not audited"
    assert token not in json.dumps(audit)
    time.sleep(0.2)
    assert token not in server.log_path.read_text()


def test_cluster_owner_creates_only_clusters_in_scope(api: httpx.Client,
                                                      server: RuntimeServer) -> None:
    mine, other = f"new-{secrets.token_hex(3)}", f"new-{secrets.token_hex(3)}"
    _, token = make_token(api, "cluster-owner", clusters=[mine])
    with httpx.Client(base_url=server.url, headers=bearer(token)) as owner:
        refused = owner.post("/clusters", json=seed_cluster(other))
        assert refused.status_code == 403 and other in refused.json()["detail"]
        assert "clusters:write" in refused.json()["detail"]
        assert owner.post("/clusters", json=seed_cluster(mine)).status_code == 201
        envelope = {"header": {"templateUri": "Parser/V1"},
                    "body": {"spec": {"values": seed_cluster(other)}}}
        assert owner.post("/api/createCluster", json=envelope).status_code == 403
        query = owner.post("/clusters/query", json={"query": {"id": {"$in": [mine, other]}}})
        assert [c["id"] for c in query.json()] == [mine]
        renamed = owner.put(f"/clusters/{mine}", json={"$set": {"id": other}})
        assert renamed.status_code == 400, "the id of a cluster never changes"
    assert api.get(f"/clusters/{other}").status_code == 404


def test_no_404_versus_403_leak_outside_the_scope(api: httpx.Client,
                                                  server: RuntimeServer) -> None:
    existing = f"x-{secrets.token_hex(3)}"
    assert api.post("/clusters", json=seed_cluster(existing)).status_code == 201
    _, token = make_token(api, "cluster-owner", clusters=["mine-only"])
    for cid in (existing, "never-existed"):
        for path in (f"/clusters/{cid}", f"/clusters/read/{cid}"):
            response = httpx.get(server.url + path, headers=bearer(token))
            assert response.status_code == 403
            assert response.json()["detail"].replace(cid, "ID").startswith("forbidden")


# -- executors: their own token, the allow-list, no redirects -------------------------------
class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[dict]] = []
    redirect_to: str = ""

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        _Recorder.seen.append({"path": self.path, "authorization": self.headers["authorization"]})
        if _Recorder.redirect_to:
            self.send_response(307)
            self.send_header("location", _Recorder.redirect_to + self.path)
            self.send_header("content-length", "0")
            self.end_headers()
            return
        payload = json.dumps({"success": True, "data": {"allowed": True}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def recorder() -> Iterator[str]:
    _Recorder.seen, _Recorder.redirect_to = [], ""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_an_executor_gets_only_its_own_token(
    api: httpx.Client, server: RuntimeServer, recorder: str
) -> None:
    executor_id = f"rec-{secrets.token_hex(3)}"
    registered = api.post("/executors", json={"id": executor_id, "url": recorder})
    assert registered.status_code == 201, registered.text
    own_token = registered.json()["token"]
    assert registered.json()["token_name"] == f"executor-{executor_id}"
    assert own_token not in api.get("/executors").text
    body = {"policy_rule_uri": "p:v1", "input_data": {}}
    _, operator = make_token(api, "operator")
    forwarded = httpx.post(f"{server.url}/executor/{executor_id}/execute_policy", json=body,
                           headers=bearer(operator))
    assert forwarded.status_code == 200 and forwarded.json()["success"] is True
    assert _Recorder.seen == [{"path": "/execute_policy",
                               "authorization": f"Bearer {own_token}"}]
    # The executor token evaluates, and nothing else.
    assert httpx.get(f"{server.url}/policies", headers=bearer(own_token)).status_code == 403
    assert api.delete(f"/executors/{executor_id}").status_code == 204
    assert api.get(f"/tokens/executor-{executor_id}").json()["revoked"] is not None


def test_an_executor_redirect_is_not_followed(
    api: httpx.Client, server: RuntimeServer, recorder: str
) -> None:
    executor_id = f"redir-{secrets.token_hex(3)}"
    assert api.post("/executors", json={"id": executor_id, "url": recorder}).status_code == 201
    _Recorder.redirect_to = recorder + "/elsewhere"
    forwarded = api.post(f"/executor/{executor_id}/execute_policy",
                         json={"policy_rule_uri": "p:v1", "input_data": {}})
    assert forwarded.status_code == 502
    assert [s["path"] for s in _Recorder.seen] == ["/execute_policy"], "one request, no follow"


@pytest.mark.parametrize(("url", "words"), [
    ("http://169.254.169.254/latest", "link-local"),
    ("http://[fe80::1]:8080", "link-local"),
    ("http://[::ffff:169.254.169.254]", "link-local"),
    ("http://100.100.100.200", "metadata"),
    ("http://metadata.google.internal", "metadata"),
    ("http://10.1.2.3:8080", "AIOS_EXECUTOR_ALLOWED_HOSTS"),
    ("http://evil.example.org", "AIOS_EXECUTOR_ALLOWED_HOSTS"),
])
def test_executor_urls_outside_the_allow_list_are_refused(
    api: httpx.Client, url: str, words: str
) -> None:
    response = api.post("/executors", json={"id": f"no-{secrets.token_hex(3)}", "url": url})
    assert response.status_code == 422 and words in response.json()["detail"], response.text


def test_allow_list_networks_and_domains() -> None:
    allowed = AllowList(["10.0.0.0/8", ".svc.cluster.local", "policies", "169.254.0.0/16"])
    for url in ("http://10.9.8.7:80", "http://exec.ns.svc.cluster.local", "http://policies"):
        allowed.check_url(url)
    for url in ("http://11.0.0.1", "http://svc.cluster.local.evil", "http://169.254.1.1"):
        with pytest.raises(UrlNotAllowed):
            allowed.check_url(url)
    with pytest.raises(UrlNotAllowed):
        AllowList([]).check_url("http://127.0.0.1")


# -- the CLI -------------------------------------------------------------------------------
def _cli(embedded_db: EmbeddedDatabase, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AIOS_MONGO_URI": embedded_db.uri, "AIOS_DB_NAME": "aios_test"}
    return subprocess.run([sys.executable, "-m", "policy_runtime", "token", *args], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def test_cli_creates_lists_and_revokes(
    embedded_db: EmbeddedDatabase, server: RuntimeServer, tmp_path: Path
) -> None:
    name = f"cli-{secrets.token_hex(3)}"
    created = _cli(embedded_db, "create", name, "--role", "cluster-owner", "--cluster", "c-9",
                   "--policy-prefix", "aiosv1.policies.c9.", "--expires-in-days", "30")
    assert created.returncode == 0, created.stderr
    record = json.loads(created.stdout)
    token = record["token"]
    assert record["role"] == "cluster-owner" and record["clusters"] == ["c-9"]
    assert httpx.get(f"{server.url}/clusters/c-9", headers=bearer(token)).status_code == 404
    assert httpx.get(f"{server.url}/clusters/c-8", headers=bearer(token)).status_code == 403
    listed = _cli(embedded_db, "list")
    assert name in listed.stdout and token not in listed.stdout
    duplicate = _cli(embedded_db, "create", name, "--role", "reader")
    assert duplicate.returncode == 1 and "exists already" in duplicate.stderr
    bad = _cli(embedded_db, "create", f"{name}-2", "--role", "reader", "--cluster", "c-1")
    assert bad.returncode == 2 and "clusters" in bad.stderr
    assert _cli(embedded_db, "revoke", name).returncode == 0
    _status_within(f"{server.url}/clusters/c-9", token, 401, 1.5)
    imported = f"{name}-imported"
    env = {**os.environ, "AIOS_MONGO_URI": embedded_db.uri, "AIOS_DB_NAME": "aios_test"}
    made_elsewhere = "x" * 40
    stored = subprocess.run(
        [sys.executable, "-m", "policy_runtime", "token", "create", imported, "--role",
         "executor", "--token-from-stdin"], input=made_elsewhere + "\n", env=env,
        capture_output=True, text=True, timeout=60, check=False)
    assert stored.returncode == 0, stored.stderr
    assert json.loads(stored.stdout)["token"] == made_elsewhere
    evaluated = httpx.post(f"{server.url}/execute_policy", headers=bearer(made_elsewhere),
                           json={"policy_rule_uri": "nope:v1", "input_data": {}})
    assert evaluated.status_code == 404, "accepted (the policy does not exist)"
    roles = json.loads(_cli(embedded_db, "roles").stdout)
    assert roles["executor"] == ["policies:eval"]


def test_a_remote_controller_needs_only_an_executor_token(
    embedded_db: EmbeddedDatabase, tmp_path: Path
) -> None:
    """The controller of a cluster holds an executor token of the policies system, not its
    admin token: remote decisions and the map's policy lookups work with it."""
    policies = RuntimeServer(embedded_db.uri, secrets.token_urlsafe(32), tmp_path / "p.log",
                             AIOS_RUN_MODES="policies", AIOS_DB_NAME="aios_scoped_exec").start()
    try:
        with policies.client() as admin:
            uri = admin.post("/policies", json={
                "name": "aiosv1.policies.remote-scoped", "version": "v1", "code": ALLOW_ALL,
            }).json()["policy_rule_uri"]
            assert admin.post("/executors", json={"id": "self", "url": policies.url}
                              ).status_code == 201
            _, executor_token = make_token(admin, "executor")
        controller = RuntimeServer(
            embedded_db.uri, secrets.token_urlsafe(32), tmp_path / "c.log",
            AIOS_RUN_MODES="clusters,controller", AIOS_DB_NAME="aios_scoped_ctrl",
            POLICY_EXECUTION_MODE="remote", POLICY_SYSTEM_EXECUTOR_ID="self",
            AIOS_POLICIES_URL=policies.url, AIOS_REMOTE_TOKEN=executor_token,
        ).start()
        try:
            with controller.client() as ctrl:
                cluster = seed_cluster("rc-1")
                cluster["config"]["policyExecutorId"] = ""  # POLICY_SYSTEM_EXECUTOR_ID
                assert ctrl.post("/clusters", json=cluster).status_code == 201
                params = {"cluster_id": "rc-1"}
                missing = ctrl.post("/pre-check-policies/update", params=params,
                                    json={"add_node": "aiosv1.policies.nope:v1"})
                assert missing.status_code == 400, missing.text
                mapped = ctrl.post("/pre-check-policies/update", params=params,
                                   json={"add_node": uri})
                assert mapped.status_code == 200, mapped.text
                decided = ctrl.post("/pre-check/add_node", params=params, json={"n": 1}).json()
                assert decided["allowed"] is True, decided["reason"]
        finally:
            controller.stop()
    finally:
        policies.stop()


def test_scoped_tokens_fail_closed_while_the_database_is_away(tmp_path: Path) -> None:
    database = EmbeddedDatabase(tmp_path / "db").start()
    runtime = RuntimeServer(database.uri, secrets.token_urlsafe(32), tmp_path / "s.log",
                            AIOS_DB_TIMEOUT_SECONDS="2").start()
    try:
        with runtime.client() as admin:
            _, token = make_token(admin, "reader")
        assert httpx.get(f"{runtime.url}/metrics", headers=bearer(token)).status_code == 200
        database.stop()
        time.sleep(1.1)  # past the token cache
        away = httpx.get(f"{runtime.url}/metrics", headers=bearer(token), timeout=30)
        assert away.status_code == 503 and "cannot be checked" in away.json()["detail"]
        assert httpx.get(f"{runtime.url}/metrics", headers=bearer(runtime.token)).status_code == 200
    finally:
        runtime.stop()
        database.stop()
