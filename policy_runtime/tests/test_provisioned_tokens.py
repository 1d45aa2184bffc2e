"""Tokens of the tokens file (AIOS_TOKENS_FILE) against a real runtime process: accepted
with their role and scope, listed but never stored or revocable through the API, a bad
file or a name clash stops the start naming what is wrong, and no secret reaches the log."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import RuntimeServer, seed_cluster
from policy_sources import ALLOW_ALL
from pymongo import MongoClient

from policy_runtime.auth.tokens import token_hash
from policy_runtime.embedded_db import EmbeddedDatabase

DB_NAME = "aios_provisioned"
OWN_CLUSTER = "prov-own-cluster"
# name -> (the token, its entry of the tokens file without the hash)
TOKENS = {
    "search-server": (secrets.token_urlsafe(32), {"role": "executor"}),
    "cluster-owner-west": (secrets.token_urlsafe(32), {
        "role": "cluster-owner", "clusters": [OWN_CLUSTER],
        "policy_prefixes": ["aiosv1.policies.prov."]}),
    "prometheus": (secrets.token_urlsafe(32), {"role": "reader"}),
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tokens_file(path: Path) -> Path:
    entries = [{"name": name, "sha256": token_hash(token), **entry}
               for name, (token, entry) in TOKENS.items()]
    path.write_text(json.dumps(entries))
    return path


@pytest.fixture(scope="module")
def runtime(embedded_db: EmbeddedDatabase,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    folder = tmp_path_factory.mktemp("provisioned")
    server = RuntimeServer(embedded_db.uri, secrets.token_urlsafe(32), folder / "server.log",
                           AIOS_DB_NAME=DB_NAME,
                           AIOS_TOKENS_FILE=str(tokens_file(folder / "tokens.json"))).start()
    yield server
    server.stop()


@pytest.fixture()
def admin(runtime: RuntimeServer) -> Iterator[httpx.Client]:
    with runtime.client() as client:
        yield client


def as_token(runtime: RuntimeServer, name: str) -> httpx.Client:
    return runtime.client(TOKENS[name][0])


def test_an_executor_token_of_the_file_evaluates_and_writes_nothing(
    runtime: RuntimeServer, admin: httpx.Client,
) -> None:
    published = admin.post("/policies", json={"name": "aiosv1.policies.prov.allow",
                                              "version": f"v{secrets.token_hex(3)}",
                                              "code": ALLOW_ALL})
    assert published.status_code in (200, 201), published.text
    uri = published.json()["policy_rule_uri"]
    with as_token(runtime, "search-server") as executor:
        decided = executor.post(f"/policies/{uri}/eval", json={"input_data": {"x": 1}})
        assert decided.status_code == 200, decided.text
        assert decided.json()["result"]["allowed"] is True
        for refused in (
            executor.post("/policies", json={"name": "aiosv1.policies.prov.no",
                                             "version": "v1", "code": ALLOW_ALL}),
            executor.delete(f"/policies/{uri}"),
            executor.post("/clusters", json=seed_cluster("prov-exec")),
            executor.get("/policies"),
            executor.get("/tokens"),
        ):
            assert refused.status_code == 403, refused.text
            assert "'search-server' (role executor" in refused.json()["detail"]


def test_a_cluster_owner_token_of_the_file_keeps_to_its_scope(
    runtime: RuntimeServer, admin: httpx.Client,
) -> None:
    assert admin.post("/clusters", json=seed_cluster("prov-other")).status_code == 201
    with as_token(runtime, "cluster-owner-west") as owner:
        assert owner.post("/clusters", json=seed_cluster(OWN_CLUSTER)).status_code == 201
        patched = owner.patch(f"/clusters/update/{OWN_CLUSTER}", json={"tags": ["file"]})
        assert patched.status_code == 200, patched.text
        for refused in (owner.get("/clusters/prov-other"),
                        owner.post("/clusters", json=seed_cluster("prov-new")),
                        owner.post("/policies", json={"name": "aiosv1.policies.elsewhere",
                                                      "version": "v1", "code": ALLOW_ALL})):
            assert refused.status_code == 403, refused.text
        query = owner.post("/clusters/query", json={"query": {}})
        assert [c["id"] for c in query.json()] == [OWN_CLUSTER]
    audit = admin.get("/audit", params={"token": "cluster-owner-west"}).json()
    assert any(a["method"] == "PATCH" and a["status"] == 200 and a["role"] == "cluster-owner"
               for a in audit), audit


def test_file_tokens_are_listed_never_stored_and_not_revocable(
    runtime: RuntimeServer, admin: httpx.Client, embedded_db: EmbeddedDatabase,
) -> None:
    made = admin.post("/tokens", json={"name": f"stored-{secrets.token_hex(3)}",
                                       "role": "reader"})
    assert made.status_code == 201, made.text
    listed = {t["name"]: t for t in admin.get("/tokens").json()}
    assert listed[made.json()["name"]]["source"] == "store"
    for name, (_, entry) in TOKENS.items():
        record = listed[name]
        assert (record["source"], record["role"]) == ("file", entry["role"])
        assert record["clusters"] == entry.get("clusters", [])
        assert "token_sha256" not in record and "sha256" not in record
        assert admin.get(f"/tokens/{name}").json() == record
    stored = MongoClient(embedded_db.uri)[DB_NAME]["api_tokens"]
    assert not stored.count_documents({"name": {"$in": list(TOKENS)}})

    revoked = admin.delete("/tokens/prometheus")
    assert revoked.status_code == 409, revoked.text
    assert "AIOS_TOKENS_FILE" in revoked.json()["detail"]
    assert "tokens.json" in revoked.json()["detail"], "the file is named"
    with as_token(runtime, "prometheus") as reader:
        assert reader.get("/policies").status_code == 200, "still accepted"
        assert reader.get("/metrics").status_code == 200
    again = admin.post("/tokens", json={"name": "prometheus", "role": "reader"})
    assert again.status_code == 422 and "exists already" in again.text


def test_no_secret_reaches_the_log(runtime: RuntimeServer) -> None:
    for token, _ in TOKENS.values():
        httpx.get(f"{runtime.url}/policies", headers=bearer(token))
        httpx.get(f"{runtime.url}/policies", headers=bearer(token + "x"))
    time.sleep(0.2)
    log = runtime.log_path.read_text()
    assert all(token not in log for token, _ in TOKENS.values())


# -- a file the runtime refuses to start with ---------------------------------------------------
HASH = "0" * 64


def start_with(file_text: str | None, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    path = tmp_path / "tokens.json"
    if file_text is not None:
        path.write_text(file_text)
    return subprocess.run(
        [sys.executable, "-m", "policy_runtime", "serve", "--port", "0"],
        env={**os.environ, "AIOS_API_TOKEN": secrets.token_urlsafe(32),
             "AIOS_MONGO_URI": "mongodb://127.0.0.1:1/?directConnection=true",
             "AIOS_TOKENS_FILE": str(path), **env},
        capture_output=True, text=True, timeout=60, check=False,
    )


@pytest.mark.parametrize(("entries", "words"), [
    ([{"name": "a", "sha256": HASH, "role": "superuser"}], "entry 0, field role: unknown role"),
    ([{"name": "a", "sha256": HASH, "role": "reader"},
      {"name": "b", "sha256": HASH[:-1] + "1", "role": "cluster-owner"}],
     "entry 1, field clusters: role cluster-owner needs at least one cluster"),
    ([{"name": "a", "sha256": HASH, "role": "reader", "clusters": ["c"]}],
     "entry 0, field clusters: role reader takes no cluster scope"),
    ([{"name": "a", "sha256": "not-a-hash", "role": "reader"}], "entry 0, field sha256"),
    ([{"name": "a", "role": "reader"}], "entry 0, field sha256: Field required"),
    ([{"name": "no spaces", "sha256": HASH, "role": "reader"}], "entry 0, field name"),
    ([{"name": "a", "sha256": HASH, "role": "reader", "colour": "red"}], "entry 0, field colour"),
    ([{"name": "a", "sha256": HASH, "role": "reader", "expires": "2099-01-01T00:00:00Z"}],
     "entry 0, field expires: Value error, a token of the tokens file does not expire"),
    ([{"name": "a", "sha256": HASH, "role": "reader"},
      {"name": "a", "sha256": HASH[:-1] + "1", "role": "reader"}],
     "entry 1, field name: the same as entry 0's"),
    ([{"name": "a", "sha256": HASH, "role": "reader"},
      {"name": "b", "sha256": HASH, "role": "reader"}], "entry 1, field sha256"),
    (["a token"], "entry 0, field (the entry)"),
    ({"name": "a"}, "must be a JSON list"),
])
def test_a_bad_file_stops_the_start_naming_entry_and_field(
    tmp_path: Path, entries: object, words: str,
) -> None:
    done = start_with(json.dumps(entries), tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "AIOS_TOKENS_FILE=" in done.stderr and words in done.stderr, done.stderr


@pytest.mark.parametrize(("text", "words"), [(None, "cannot be read"), ("[{", "is not JSON")])
def test_an_unreadable_file_stops_the_start(tmp_path: Path, text: str | None,
                                            words: str) -> None:
    done = start_with(text, tmp_path)
    assert done.returncode == 2 and words in done.stderr, done.stderr


def test_a_file_token_named_like_a_stored_one_stops_the_start(
    embedded_db: EmbeddedDatabase, admin: httpx.Client, tmp_path: Path,
) -> None:
    name = f"clash-{secrets.token_hex(3)}"
    assert admin.post("/tokens", json={"name": name, "role": "reader"}).status_code == 201
    entries = [{"name": name, "sha256": token_hash(secrets.token_urlsafe(32)), "role": "reader"}]
    done = start_with(json.dumps(entries), tmp_path, AIOS_MONGO_URI=embedded_db.uri,
                      AIOS_DB_NAME=DB_NAME, AIOS_POOL_SIZE="1")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert f"has token {name!r}" in output and "token store holds a live token" in output
