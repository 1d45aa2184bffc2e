"""Upstream AIOS's callers of the policies system and executor, one test per call site.

Each test sends exactly the request the upstream caller sends (method, path, body shape)
and asserts exactly what that caller reads from the answer: the status it checks, the
envelope keys, the fields it takes out of ``data``. The one change an upstream client
needs is the bearer header (docs/compatibility/policies.md); the last tests show the
request without it is refused. Upstream paths are given relative to upstream's
``services/`` directory.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import upstream_archives
from conftest import RuntimeServer
from policy_sources import ALLOW_ALL

# The fixtures of the assets registry stand-in and of a runtime allowed to fetch from it.
assets = upstream_archives.assets
fetching_server = upstream_archives.fetching_server

# The fields of upstream's PolicyRule dataclass, in its order
# (management-services/cluster_controller_gateway/core/policy_sandbox/client.py).
POLICY_RULE_FIELDS = (
    "policy_rule_uri",
    "name",
    "version",
    "release_tag",
    "metadata",
    "tags",
    "code",
    "code_type",
    "type",
    "policy_input_schema",
    "policy_output_schema",
    "policy_settings_schema",
    "policy_parameters_schema",
    "policy_settings",
    "policy_parameters",
    "description",
    "functionality_data",
)


def policy_rule(name: str, code: str, version: str = "v0.0.1", **fields: Any) -> dict:
    """``PolicyRule(...).to_dict()`` as upstream builds it: every field, ``tags`` a string."""
    record = {
        "policy_rule_uri": f"{name}:{version}-stable",
        "name": name,
        "version": version,
        "release_tag": "stable",
        "metadata": {"author": "aios", "team": "infra"},
        "tags": "gpu,precheck",
        "code": code,
        "code_type": "python",
        "type": "precheck",
        "policy_input_schema": {},
        "policy_output_schema": {},
        "policy_settings_schema": {},
        "policy_parameters_schema": {},
        "policy_settings": {},
        "policy_parameters": {"min": 1},
        "description": "admits nodes with enough GPUs",
        "functionality_data": {"category": "admission", "inputs": ["node"]},
    }
    record.update(fields)
    assert tuple(record)[: len(POLICY_RULE_FIELDS)] == POLICY_RULE_FIELDS
    return record


def from_dict(data: dict) -> dict:
    """What upstream's ``PolicyRule.from_dict`` takes: every key, or a KeyError."""
    taken = {key: data[key] for key in POLICY_RULE_FIELDS[1:]}
    taken["policy_rule_uri"] = f"{data['name']}:{data['version']}-{data['release_tag']}"
    return taken


@pytest.fixture()
def client(fetching_server: RuntimeServer) -> Iterator[httpx.Client]:
    with fetching_server.client() as api:
        yield api


@pytest.fixture()
def name(request: pytest.FixtureRequest) -> str:
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    return f"aiosv1.policies.upstream.{safe[:50]}-{secrets.token_hex(3)}"


def published(client: httpx.Client, record: dict) -> str:
    created = client.post("/policy", json=record)
    assert created.status_code == 200 and created.json()["success"] is True, created.text
    return created.json()["data"]["policy_rule_uri"]


# -- PolicyDBClient (18 copies of policy_sandbox/client.py, policies-components/executor/
#    core/client.py, policies-components/executor_server/core/client.py) -----------------
def test_create_policy(client: httpx.Client, assets: str, name: str) -> None:
    """management-services/cluster_controller_gateway/core/policy_sandbox/client.py,
    ``PolicyDBClient.create_policy``: ``POST /policy`` with ``policy.to_dict()``; success
    is ``status_code == 200`` and ``json()["success"]``. The code is the archive's URL."""
    record = policy_rule(name, f"{assets}/policy.zip")
    response = client.post("/policy", json=record)
    assert response.status_code == 200
    assert response.json()["success"] is True
    # Publishing the same record again is no failure either (same code: same version).
    again = client.post("/policy", json=record)
    assert again.status_code == 200 and again.json()["success"] is True
    assert again.json()["data"]["created"] is False


def test_read_policy(client: httpx.Client, assets: str, name: str) -> None:
    """cluster_controller_gateway/core/policy_sandbox/client.py,
    ``PolicyDBClient.read_policy``: ``GET /policy/<uri>``; reads ``status_code == 200``,
    ``json()["success"]``, then ``PolicyRule.from_dict(json()["data"])``: every field."""
    record = policy_rule(name, f"{assets}/policy.zip", unknown_upstream_field={"kept": [1, 2]})
    uri = published(client, record)
    response = client.get(f"/policy/{uri}")
    assert response.status_code == 200 and response.json()["success"] is True
    data = response.json()["data"]
    assert from_dict(data) == {key: record[key] for key in POLICY_RULE_FIELDS}
    # The field upstream's record carried beyond its dataclass is kept too.
    assert data["unknown_upstream_field"] == {"kept": [1, 2]}


def test_read_policy_for_the_local_executor(
    client: httpx.Client,
    assets: str,
    name: str,
) -> None:
    """cluster_controller_gateway/core/policy_sandbox/executor.py,
    ``PolicyFunctionExecutor.__init__`` (local mode): ``read_policy(uri)``, then
    ``LocalCodeExecutor(download_url=policy_data.code, ...)`` with
    ``policy_data.policy_parameters`` and ``policy_data.policy_settings``: ``code`` must
    still be the archive's URL."""
    url = f"{assets}/policy.tar.xz"
    uri = published(client, policy_rule(name, url, policy_settings={"log_input": False}))
    data = client.get(f"/policy/{uri}").json()["data"]
    assert data["code"] == url
    assert data["policy_parameters"] == {"min": 1}
    assert data["policy_settings"] == {"log_input": False}
    # What runs here is the archive's source, fetched once at publish.
    native = client.get(f"/policies/{uri}").json()
    assert "AIOSv1PolicyRule" in native["code"] and native["upstream"]["code"] == url


def test_update_policy(client: httpx.Client, assets: str, name: str) -> None:
    """cluster_controller_gateway/core/policy_sandbox/client.py,
    ``PolicyDBClient.update_policy``: ``PUT /policy/<uri>`` with ``to_dict()`` of the
    record (read, then changed); success is ``status_code == 200`` and ``success``."""
    uri = published(client, policy_rule(name, f"{assets}/policy.zip"))
    record = from_dict(client.get(f"/policy/{uri}").json()["data"])
    record.update(
        description="now documented",
        metadata={"owner": "team-b"},
        tags="gpu,precheck,reviewed",
        functionality_data={"category": "other"},
    )
    response = client.put(f"/policy/{uri}", json=record)
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    read = client.get(f"/policy/{uri}").json()["data"]
    assert from_dict(read) == record


def test_update_policy_with_other_code_names_the_version_to_publish(
    client: httpx.Client,
    assets: str,
    name: str,
) -> None:
    """``PolicyDBClient.update_policy`` with different code: published versions are
    immutable, so the answer is no success (the caller's ``status_code == 200`` check
    fails) and the message names the version to publish the code as instead."""
    uri = published(client, policy_rule(name, f"{assets}/policy.zip"))
    record = from_dict(client.get(f"/policy/{uri}").json()["data"])
    for change in (
        {"code": f"{assets}/deny.zip"},
        {"code": ALLOW_ALL},
        {"policy_parameters": {"min": 8}},
    ):
        response = client.put(f"/policy/{uri}", json={**record, **change})
        assert response.status_code == 409, response.text
        body = response.json()
        assert body["success"] is False
        assert "immutable" in body["message"] and f"{name}:v0.0.2-stable" in body["message"]
    assert client.get(f"/policy/{uri}").json()["data"]["code"] == f"{assets}/policy.zip"
    # The same code under another URL of the same archive is the same code.
    same = client.put(f"/policy/{uri}", json={**record, "code": f"{assets}/policy.zip?v=2"})
    assert same.status_code == 200 and same.json()["success"] is True


def test_delete_policy(client: httpx.Client, assets: str, name: str) -> None:
    """cluster_controller_gateway/core/policy_sandbox/client.py,
    ``PolicyDBClient.delete_policy``: ``DELETE /policy/<uri>``; success is
    ``status_code == 200`` and ``success``."""
    uri = published(client, policy_rule(name, f"{assets}/policy.zip"))
    response = client.delete(f"/policy/{uri}")
    assert response.status_code == 200 and response.json()["success"] is True
    assert client.get(f"/policy/{uri}").json()["success"] is False


def test_query_policies(client: httpx.Client, assets: str, name: str) -> None:
    """cluster_controller_gateway/core/policy_sandbox/client.py,
    ``PolicyDBClient.query_policies``: ``POST /policy/query`` with the filter as the body;
    reads ``status_code == 200``, ``success``, then ``from_dict`` of each of ``data``."""
    first = published(client, policy_rule(name, f"{assets}/policy.zip"))
    second = published(
        client,
        policy_rule(name, f"{assets}/policy.zip", version="v0.0.2", type="stability_checker"),
    )
    gone = published(client, policy_rule(name, f"{assets}/policy.zip", version="v0.0.3"))
    client.delete(f"/policy/{gone}")
    response = client.post("/policy/query", json={"name": name})
    assert response.status_code == 200 and response.json()["success"] is True
    records = [from_dict(data) for data in response.json()["data"]]
    assert [r["policy_rule_uri"] for r in records] == [first, second]
    by_type = client.post("/policy/query", json={"name": name, "type": "stability_checker"})
    assert [r["policy_rule_uri"] for r in by_type.json()["data"]] == [second]


def test_query_policies_refuses_operators_outside_the_allow_list(
    client: httpx.Client,
) -> None:
    """``PolicyDBClient.query_policies``: the filter passes the clusters query's operator
    allow-list; outside it the answer is no success, naming the operator."""
    for filter_, status, needle in (
        ({"$where": "sleep(1000)"}, 400, "$where"),
        ({"name": {"$function": {"body": "x", "args": [], "lang": "js"}}}, 400, "$function"),
        ({"$expr": {"$gt": ["$version", "v0"]}}, 400, "$expr"),
        ({"name": {"$regex": "(a+)+$"}}, 422, "$regex"),
    ):
        response = client.post("/policy/query", json=filter_)
        assert response.status_code == status, response.text
        assert response.json()["success"] is False and needle in response.json()["message"]


# -- search-server ------------------------------------------------------------------------
def test_search_server_query_policies(
    client: httpx.Client,
    assets: str,
    name: str,
) -> None:
    """management-services/search-server/core/webhooks/policies.py,
    ``PoliciesQueryClient.query_policies`` (called by similarity_search.execute_query with
    the filter ``query_translator_old`` builds: ``$and``/``$or``, ``$regex`` for LIKE,
    ``$in``, ``$ne``...): ``POST /policy/query``; reads ``status_code == 200 and
    success``, then ``data`` (the records as they are)."""
    uri = published(client, policy_rule(name, f"{assets}/policy.zip"))
    like = name.replace(".", r"\.").rsplit("-", 1)[0] + ".*"
    filter_ = {
        "$and": [
            {"name": {"$regex": like}},
            {"type": {"$in": ["precheck"]}},
            {"version": {"$ne": "v9"}},
        ]
    }
    response = client.post("/policy/query", json=filter_)
    assert response.status_code == 200 and response.json()["success"] is True
    assert [d["policy_rule_uri"] for d in response.json()["data"]] == [uri]


# -- remote execution ---------------------------------------------------------------------
@pytest.fixture()
def executor_id(client: httpx.Client, fetching_server: RuntimeServer) -> str:
    """This runtime registered as an executor of itself (upstream: ``POST /executor``)."""
    executor = f"upstream-{secrets.token_hex(3)}"
    created = client.post("/executors", json={"id": executor, "url": fetching_server.url})
    assert created.status_code == 201, created.text
    return executor


def test_execute_policy_request(
    client: httpx.Client,
    assets: str,
    name: str,
    executor_id: str,
) -> None:
    """cluster_controller_gateway/core/policy_sandbox/executor.py,
    ``execute_policy_request`` (and ``PolicyFunctionExecutor(mode="remote")
    .execute_policy_rule``, which calls it): ``POST /executor/<id>/execute_policy`` with
    ``{"policy_rule_uri", "input_data", "parameters"}``; reads ``raise_for_status()``
    then ``json()["data"]``."""
    uri = published(client, policy_rule(name, f"{assets}/policy.zip"))
    response = client.post(
        f"/executor/{executor_id}/execute_policy",
        json={"policy_rule_uri": uri, "input_data": {"gpus": 2}, "parameters": None},
    )
    response.raise_for_status()
    assert response.json()["data"] == {"allowed": True}
    overridden = client.post(
        f"/executor/{executor_id}/execute_policy",
        json={"policy_rule_uri": uri, "input_data": {"gpus": 2}, "parameters": {"min": 4}},
    )
    overridden.raise_for_status()
    assert overridden.json()["data"] == {"allowed": False}


def test_executor_proxy_execute_policy(
    client: httpx.Client,
    assets: str,
    name: str,
) -> None:
    """management-services/policies-components/system/core/executor_proxy.py (and
    registries/system/core/executor_proxy.py), ``ExecutorProxyClient.execute_policy``:
    ``POST <executor>/execute_policy`` with ``{"policy_rule_uri", "input_data",
    "parameters"}``; ``_handle_response`` reads ``json()`` (whatever the status: upstream's
    executor, policies-components/executor/core/api.py, answered 202), then ``data`` when
    ``success``, else raises ``message``."""
    uri = published(client, policy_rule(name, f"{assets}/policy.zip"))
    ok = client.post(
        "/execute_policy",
        json={"policy_rule_uri": uri, "input_data": {"gpus": 1}, "parameters": None},
    )
    assert ok.is_success and ok.json()["success"] is True
    assert ok.json().get("data", ok.json().get("message")) == {"allowed": True}
    failed = client.post(
        "/execute_policy",
        json={"policy_rule_uri": f"{name}:v9-none", "input_data": {"gpus": 1}, "parameters": None},
    )
    assert failed.json()["success"] is False and "v9-none" in failed.json()["message"]


# -- the bearer header ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/policy", {}),
        ("GET", "/policy/x:v1-stable", None),
        ("PUT", "/policy/x:v1-stable", {}),
        ("DELETE", "/policy/x:v1-stable", None),
        ("POST", "/policy/query", {}),
        ("POST", "/execute_policy", {"policy_rule_uri": "x:v1", "input_data": {}}),
        ("POST", "/executor/e/execute_policy", {"policy_rule_uri": "x:v1", "input_data": {}}),
    ],
)
def test_upstream_requests_need_the_bearer_header(
    fetching_server: RuntimeServer,
    method: str,
    path: str,
    body: Any,
) -> None:
    """Every upstream call above, sent as upstream sends it (no header), is refused: auth
    stays required; adding ``Authorization: Bearer <token>`` is the one change."""
    response = httpx.request(method, fetching_server.url + path, json=body, timeout=30)
    assert response.status_code == 401, response.text


def json_nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"x": value}
    return value


# -- hostile records --------------------------------------------------------------------------
def test_the_runtime_fields_of_a_record_cannot_be_forged(client: httpx.Client, name: str) -> None:
    """A record may echo what a read answered (code_sha256, created_at...): it is ignored,
    never stored over what the runtime computes."""
    forged = policy_rule(
        name,
        ALLOW_ALL,
        code_sha256="0" * 64,
        created_at="1970-01-01",
        upstream={"code": "http://evil.invalid/x.zip"},
        deleted=True,
        _id="x",
    )
    uri = published(client, forged)
    native = client.get(f"/policies/{uri}").json()
    assert native["code_sha256"] != "0" * 64 and native["created_at"] != "1970-01-01"
    assert native["upstream"] == {"tags": "gpu,precheck"} and "deleted" not in native
    assert client.get(f"/policy/{uri}").json()["data"]["code"] == ALLOW_ALL


@pytest.mark.parametrize(
    ("fields", "status", "needle"),
    [
        ({"functionality_data": {"$where": "1"}}, 422, "$where"),
        ({"$set": {"code": "x"}}, 422, "'$set'"),
        ({"a.b": 1}, 422, "'a.b'"),
        ({"deep": json_nested(40)}, 422, "deeper than"),
        ({f"extra{i}": i for i in range(120)}, 422, "at most 100"),
        ({"name": "bad name!"}, 422, "name"),
        ({"code": None}, 422, "code"),
        ({"code_type": "javascript"}, 422, "code_type"),
        ({"policy_rule_uri": "other:v1-x"}, 422, "does not match"),
    ],
)
def test_a_hostile_record_is_refused_naming_the_field(
    client: httpx.Client, name: str, fields: dict, status: int, needle: str
) -> None:
    response = client.post("/policy", json={**policy_rule(name, ALLOW_ALL), **fields})
    assert response.status_code == status, response.text
    assert response.json()["success"] is False and needle in response.json()["message"]


def test_an_update_names_the_same_policy_it_targets(client: httpx.Client, name: str) -> None:
    uri = published(client, policy_rule(name, ALLOW_ALL))
    other = client.put(f"/policy/{uri}", json=policy_rule(name, ALLOW_ALL, version="v0.0.9"))
    assert other.status_code == 422 and "cannot change" in other.json()["message"]
    missing = client.put(
        f"/policy/{name}:v0.0.9-stable", json=policy_rule(name, ALLOW_ALL, version="v0.0.9")
    )
    assert missing.status_code == 404 and missing.json()["success"] is False


def test_an_upstream_uri_without_release_tag_is_accepted(client: httpx.Client, name: str) -> None:
    """Upstream writes ``<name>:<version>-`` for an empty release tag; the URI here is
    ``<name>:<version>``, and the record reads back under it."""
    record = policy_rule(name, ALLOW_ALL, release_tag="", policy_rule_uri=f"{name}:v0.0.1-")
    uri = published(client, record)
    assert uri == f"{name}:v0.0.1"
    assert client.get(f"/policy/{uri}").json()["data"]["release_tag"] == ""


def test_the_native_routes_stay_strict(client: httpx.Client, name: str) -> None:
    """Upstream's extra fields are accepted on the upstream routes only."""
    record = policy_rule(name, ALLOW_ALL)
    response = client.post("/policies", json=record)
    assert response.status_code == 422 and "functionality_data" in response.text


def test_a_query_that_is_no_filter_is_refused(client: httpx.Client) -> None:
    assert client.post("/policy/query", json=[{"name": "x"}]).status_code == 422
    deep = client.post("/policy/query", json={"name": json_nested(40)})
    assert deep.status_code == 400 and deep.json()["success"] is False
