"""Upstream AIOS's graph and function routes of the policies system, against a real runtime.

The search server (``management-services/search-server/core/webhooks/policies.py``,
``PoliciesQueryClient``) queries ``POST /graphs/query`` and ``POST /function/query``; the
other graph routes are those of upstream's policies system
(``management-services/policies-components/system/core/apis.py``), whose records are
``Graph`` of ``core/schema.py`` and whose ``execute_graph`` (``core/executor_proxy.py``)
runs the graph as a DAG. Each test sends exactly the request upstream's client or route
takes and asserts what its caller reads: ``status_code == 200 and success``, then
``data``. A node here names a published policy, evaluated in the sandbox; the routes
that would deploy policies as functions or jobs answer 501. Upstream paths are relative
to upstream's ``services/`` directory.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import RuntimeServer
from policy_sources import eval_body

from policy_runtime.api.routes.functions import REFUSED_ROUTES

# The fields of upstream's Graph dataclass, in its order
# (management-services/policies-components/system/core/schema.py).
GRAPH_FIELDS = (
    "graph_uri",
    "graph_name",
    "graph_version",
    "graph_release_tag",
    "graph_metadata",
    "graph_function_ids",
    "graph_connection_data",
    "graph_search_tags",
    "graph_description",
    "graph_input_schema",
    "graph_output_schema",
)

# A node that labels what it got: {"label": <its parameter>, "got": <its input>}.
LABEL = eval_body('return {"label": parameters["label"], "got": input_data}')
FAILS = eval_body('raise ValueError("no capacity left for " + str(input_data))')


def graph_record(name: str, nodes: list[str], edges: dict[str, list[str]],
                 version: str = "v0.0.1", **fields: Any) -> dict:
    """``Graph(...).to_dict()`` as upstream builds it: every field."""
    record = {
        "graph_uri": f"{name}:{version}-stable",
        "graph_name": name,
        "graph_version": version,
        "graph_release_tag": "stable",
        "graph_metadata": {"owner": "aios", "team": "infra"},
        "graph_function_ids": nodes,
        "graph_connection_data": edges,
        "graph_search_tags": ["admission", "gpu"],
        "graph_description": "admits nodes in three steps",
        "graph_input_schema": {"type": "object"},
        "graph_output_schema": {},
    }
    record.update(fields)
    assert tuple(record)[: len(GRAPH_FIELDS)] == GRAPH_FIELDS
    return record


def from_dict(data: dict) -> dict:
    """What upstream's ``Graph.from_dict`` takes: every key, or a KeyError."""
    taken = {key: data[key] for key in GRAPH_FIELDS[1:]}
    taken["graph_uri"] = f"{data['graph_name']}:{data['graph_version']}-{data['graph_release_tag']}"
    return taken


@pytest.fixture()
def name(request: pytest.FixtureRequest) -> str:
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    return f"aiosv1.graphs.upstream.{safe[:50]}-{secrets.token_hex(3)}"


def publish(api: httpx.Client, name: str, code: str = LABEL, **fields: Any) -> str:
    body = {"name": name, "version": "v0.0.1", "release_tag": "stable", "code": code, **fields}
    response = api.post("/policies", json=body)
    assert response.status_code == 201, response.text
    return response.json()["policy_rule_uri"]


@pytest.fixture()
def nodes(api: httpx.Client, name: str) -> dict[str, str]:
    """Four published policies, a to d, each labelling its result with its letter."""
    return {
        letter: publish(api, f"{name}.{letter}", policy_parameters={"label": letter})
        for letter in "abcd"
    }


def created(api: httpx.Client, record: dict) -> str:
    response = api.post("/graphs", json=record)
    assert response.status_code == 200 and response.json()["success"] is True, response.text
    return response.json()["data"]["graph_uri"]


def diamond(nodes: dict[str, str]) -> tuple[list[str], dict[str, list[str]]]:
    """a feeds b and c, which both feed d."""
    a, b, c, d = (nodes[letter] for letter in "abcd")
    return [a, b, c, d], {a: [b, c], b: [d], c: [d]}


def make_token(api: httpx.Client, role: str) -> str:
    response = api.post("/tokens", json={"name": f"g-{role}-{secrets.token_hex(4)}", "role": role})
    assert response.status_code == 201, response.text
    return response.json()["token"]


@pytest.fixture(scope="module")
def tokens(server: RuntimeServer) -> Iterator[dict[str, str]]:
    with server.client() as admin:
        yield {role: make_token(admin, role) for role in ("reader", "operator", "executor")}


# -- the search server ------------------------------------------------------------------
def test_search_server_query_graphs(api: httpx.Client, name: str,
                                    nodes: dict[str, str]) -> None:
    """management-services/search-server/core/webhooks/policies.py,
    ``PoliciesQueryClient.query_graphs`` (called by similarity_search.execute_query for
    ``policyGraph`` with the filter ``query_translator_old`` builds: ``$and``, ``$regex``
    for LIKE, ``$in``, ``$ne``): ``POST /graphs/query`` with the filter as the body;
    reads ``status_code == 200 and success``, then ``data``."""
    uri = created(api, graph_record(name, *diamond(nodes)))
    like = name.replace(".", r"\.").rsplit("-", 1)[0] + ".*"
    filter_ = {"$and": [{"graph_name": {"$regex": like}},
                        {"graph_search_tags": {"$in": ["gpu"]}},
                        {"graph_version": {"$ne": "v9"}}]}
    response = api.post("/graphs/query", json=filter_)
    assert response.status_code == 200 and response.json()["success"] is True
    data = response.json()["data"]
    assert [graph["graph_uri"] for graph in data] == [uri]
    # Each item is upstream's Graph record, its edges the object upstream stored.
    assert from_dict(data[0]) == from_dict(graph_record(name, *diamond(nodes)))
    none = api.post("/graphs/query", json={"graph_name": name, "graph_version": "v9"})
    assert none.status_code == 200 and none.json() == {"success": True, "data": []}


def test_search_server_query_functions(api: httpx.Client) -> None:
    """search-server/core/webhooks/policies.py, ``PoliciesQueryClient.query_functions``
    (similarity_search.execute_query for ``policyFunction``): ``POST /function/query``;
    reads ``status_code == 200 and success``, then ``data``: no policy is ever deployed
    as a function here, so the list is empty, and the filter is still checked."""
    filter_ = {"$and": [{"function_id": {"$regex": "aiosv1.*"}},
                        {"function_tags": {"$in": ["gpu"]}}]}
    response = api.post("/function/query", json=filter_)
    assert response.status_code == 200
    assert response.json() == {"success": True, "data": []}


@pytest.mark.parametrize("path", ["/graphs/query", "/function/query"])
@pytest.mark.parametrize(
    ("filter_", "status", "needle"),
    [
        ({"$where": "sleep(1000)"}, 400, "$where"),
        ({"graph_name": {"$function": {"body": "x", "args": [], "lang": "js"}}}, 400,
         "$function"),
        ({"$expr": {"$gt": ["$graph_version", "v0"]}}, 400, "$expr"),
        ({"graph_name": {"$regex": "(a+)+$"}}, 422, "$regex"),
        ([{"graph_name": "x"}], 400, "JSON object"),
    ],
)
def test_queries_refuse_operators_outside_the_allow_list(
    api: httpx.Client, path: str, filter_: Any, status: int, needle: str
) -> None:
    """The filter goes through the operator allow-list of ``POST /policy/query``: the
    search server's ``raise Exception(message)`` gets the operator's name."""
    response = api.post(path, json=filter_)
    assert response.status_code == status, response.text
    assert response.json()["success"] is False and needle in response.json()["message"]
    if isinstance(filter_, dict):  # the policies query answers the same
        assert api.post("/policy/query", json=filter_).status_code == status


# -- the graphs registry ----------------------------------------------------------------
def test_create_and_read_graph(api: httpx.Client, name: str, nodes: dict[str, str]) -> None:
    """policies-components/system/core/apis.py ``create_graph`` (``POST /graphs``, the
    record ``Graph.from_dict`` reads; answers ``{"success": true, "data": {"graph_uri"}}``)
    and ``get_graph`` (``GET /graphs/<graph_uri>``; ``data`` is ``Graph.to_dict()``)."""
    record = graph_record(name, *diamond(nodes), kept_field={"upstream": [1, 2]})
    response = api.post("/graphs", json=record)
    assert response.status_code == 200
    assert response.json()["success"] is True
    assert response.json()["data"]["graph_uri"] == f"{name}:v0.0.1-stable"
    read = api.get(f"/graphs/{name}:v0.0.1-stable")
    assert read.status_code == 200 and read.json()["success"] is True
    data = read.json()["data"]
    assert from_dict(data) == from_dict(record)
    assert data["kept_field"] == {"upstream": [1, 2]}
    # The same record again is no failure; a different graph under the URI is a conflict.
    again = api.post("/graphs", json=record)
    assert again.status_code == 200 and again.json()["data"]["created"] is False
    other = api.post("/graphs", json={**record, "graph_description": "another"})
    assert other.status_code == 409 and "PUT /graphs/" in other.json()["message"]


def test_update_graph(api: httpx.Client, name: str, nodes: dict[str, str]) -> None:
    """apis.py ``update_graph``: ``PUT /graphs/<graph_uri>`` with the whole record; answers
    ``{"success": true, "data": {"graph_uri"}}``; the graph is replaced."""
    uri = created(api, graph_record(name, *diamond(nodes)))
    a, b = nodes["a"], nodes["b"]
    chain = graph_record(name, [a, b], {a: [b]}, graph_description="two steps")
    response = api.put(f"/graphs/{uri}", json=chain)
    assert response.status_code == 200
    assert response.json() == {"success": True, "data": {"graph_uri": uri}}
    data = api.get(f"/graphs/{uri}").json()["data"]
    assert data["graph_function_ids"] == [a, b] and data["graph_connection_data"] == {a: [b]}
    assert data["graph_description"] == "two steps"


def test_delete_graph(api: httpx.Client, name: str, nodes: dict[str, str]) -> None:
    """apis.py ``delete_graph``: ``DELETE /graphs/<graph_uri>``; answers
    ``{"success": true, "data": {"graph_uri"}}``. Its policies stay published."""
    uri = created(api, graph_record(name, *diamond(nodes)))
    response = api.delete(f"/graphs/{uri}")
    assert response.status_code == 200
    assert response.json() == {"success": True, "data": {"graph_uri": uri}}
    gone = api.get(f"/graphs/{uri}")
    assert gone.status_code == 404 and gone.json()["success"] is False
    assert api.delete(f"/graphs/{uri}").status_code == 404
    assert api.get(f"/policy/{nodes['a']}").status_code == 200


def test_an_upstream_uri_without_release_tag_is_accepted(
    api: httpx.Client, name: str, nodes: dict[str, str]
) -> None:
    """Upstream writes ``<name>:<version>-`` for an empty release tag; the URI here is
    ``<name>:<version>``, as for policies."""
    a = nodes["a"]
    record = graph_record(name, [a], {}, graph_release_tag="", graph_uri=f"{name}:v0.0.1-")
    assert created(api, record) == f"{name}:v0.0.1"


# -- execute_graph ----------------------------------------------------------------------
def test_execute_graph_runs_the_policies_in_dag_order(
    api: httpx.Client, name: str, nodes: dict[str, str]
) -> None:
    """apis.py ``execute_graph_api`` / executor_proxy.py ``execute_graph``:
    ``POST /graph/execute_graph`` with ``{"graph_uri", "input_data"}``; answers
    ``{"success": true, "data": <the output node's result>}`` with 200. A root gets
    ``input_data``, a node with one source its result, a node with several the list of
    their results in the order of ``graph_connection_data``."""
    uri = created(api, graph_record(name, *diamond(nodes)))
    response = api.post("/graph/execute_graph",
                        json={"graph_uri": uri, "input_data": {"gpus": 2}})
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True
    a = {"label": "a", "got": {"gpus": 2}}
    assert response.json()["data"] == {
        "label": "d", "got": [{"label": "b", "got": a}, {"label": "c", "got": a}]}


def test_execute_graph_roots_in_the_order_of_the_nodes(
    api: httpx.Client, name: str, nodes: dict[str, str]
) -> None:
    """Two roots (c, then a, as graph_function_ids lists them) feed b: b gets their results
    in the order of graph_connection_data."""
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    uri = created(api, graph_record(name, [c, a, b], {a: [b], c: [b]}))
    response = api.post("/graph/execute_graph", json={"graph_uri": uri, "input_data": [1]})
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {
        "label": "b", "got": [{"label": "a", "got": [1]}, {"label": "c", "got": [1]}]}


def test_a_failing_node_stops_the_graph_naming_it(api: httpx.Client, name: str,
                                                  nodes: dict[str, str]) -> None:
    """A node's policy that raises stops the graph: ``success`` false, the node and the
    policy's error in ``message``, the status ``/execute_policy`` answers (422)."""
    failing = publish(api, f"{name}.fails", FAILS)
    a, d = nodes["a"], nodes["d"]
    uri = created(api, graph_record(name, [a, failing, d], {a: [failing], failing: [d]}))
    response = api.post("/graph/execute_graph", json={"graph_uri": uri, "input_data": {"x": 1}})
    assert response.status_code == 422
    body = response.json()
    assert body["success"] is False
    assert failing in body["message"] and "PolicyError" in body["message"]
    assert "no capacity left for" in body["message"]


def test_a_node_past_its_time_limit_is_a_504(api: httpx.Client, name: str,
                                              nodes: dict[str, str]) -> None:
    """The node's own limits hold: a policy stopped at its timeout_seconds stops the graph
    with the status ``/execute_policy`` answers for it (504)."""
    spins = publish(api, f"{name}.spins", eval_body("while True:\n    pass"),
                    policy_settings={"timeout_seconds": 0.3})
    a = nodes["a"]
    uri = created(api, graph_record(name, [a, spins], {a: [spins]}))
    response = api.post("/graph/execute_graph", json={"graph_uri": uri, "input_data": {}})
    assert response.status_code == 504, response.text
    assert spins in response.json()["message"] and "Timeout" in response.json()["message"]


def test_the_nodes_run_in_the_sandbox(api: httpx.Client, name: str) -> None:
    """A node is a decision like any other: the sandbox refuses what it refuses there."""
    escapes = publish(api, f"{name}.escape", eval_body("import os\nreturn os.getcwd()"))
    uri = created(api, graph_record(name, [escapes], {}))
    response = api.post("/graph/execute_graph", json={"graph_uri": uri, "input_data": {}})
    assert response.status_code == 422 and response.json()["success"] is False
    assert escapes in response.json()["message"]
    assert "SandboxViolation" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"input_data": {"x": 1}}, 400, "graph_uri"),
        ({"graph_uri": "x:v1-stable"}, 400, "input_data"),
        ({"graph_uri": "aiosv1.graphs.none:v1-stable", "input_data": {}}, 404, "no graph"),
    ],
)
def test_execute_graph_bad_requests(api: httpx.Client, body: dict, status: int,
                                    needle: str) -> None:
    """apis.py ``execute_graph_api``: a missing ``graph_uri`` or ``input_data`` is 400."""
    response = api.post("/graph/execute_graph", json=body)
    assert response.status_code == status, response.text
    assert response.json()["success"] is False and needle in response.json()["message"]


# -- adversarial records ----------------------------------------------------------------
def test_a_cycle_is_refused_at_create_and_update(api: httpx.Client, name: str,
                                                 nodes: dict[str, str]) -> None:
    a, b, c = nodes["a"], nodes["b"], nodes["c"]
    cyclic = graph_record(name, [a, b, c], {a: [b], b: [c], c: [a]})
    response = api.post("/graphs", json=cyclic)
    assert response.status_code == 422
    message = response.json()["message"]
    assert response.json()["success"] is False and "cycle" in message
    assert f"{a} -> {b} -> {c} -> {a}" in message
    uri = created(api, graph_record(name, [a, b], {a: [b]}))
    update = api.put(f"/graphs/{uri}", json=graph_record(name, [a, b], {a: [b], b: [a]}))
    assert update.status_code == 422 and "cycle" in update.json()["message"]
    # The stored graph is the one before the refused update.
    assert api.get(f"/graphs/{uri}").json()["data"]["graph_connection_data"] == {a: [b]}


def test_a_node_naming_no_published_policy_is_refused(api: httpx.Client, name: str,
                                                      nodes: dict[str, str]) -> None:
    a = nodes["a"]
    missing = f"{name}.never:v0.0.1-stable"
    response = api.post("/graphs", json=graph_record(name, [a, missing], {a: [missing]}))
    assert response.status_code == 422
    assert response.json()["success"] is False and missing in response.json()["message"]
    uri = created(api, graph_record(name, [a], {}))
    update = api.put(f"/graphs/{uri}", json=graph_record(name, [a, missing], {a: [missing]}))
    assert update.status_code == 422 and missing in update.json()["message"]


def test_a_policy_a_graph_runs_is_deleted_only_by_force_and_then_named(api: httpx.Client, name: str,
                                                   nodes: dict[str, str]) -> None:
    a = nodes["a"]
    doomed = publish(api, f"{name}.doomed", policy_parameters={"label": "z"})
    uri = created(api, graph_record(name, [a, doomed], {a: [doomed]}))
    refused = api.delete(f"/policy/{doomed}")
    assert refused.status_code == 409, refused.text
    assert f"graph {uri}" in refused.json()["message"] and "force" in refused.json()["message"]
    assert api.get(f"/policy/{doomed}").status_code == 200, "a refused delete deletes nothing"
    assert api.delete(f"/policy/{doomed}", params={"force": "true"}).status_code == 200
    response = api.post("/graph/execute_graph", json={"graph_uri": uri, "input_data": {}})
    assert response.status_code == 409
    assert doomed in response.json()["message"] and "no longer published" in (
        response.json()["message"])


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda r, n: {**r, "graph_connection_data": {n[0]: [n[0]]}}, "cycle"),
        (lambda r, n: {**r, "graph_connection_data": {n[0]: ["elsewhere"]}}, "elsewhere"),
        (lambda r, n: {**r, "graph_connection_data": {"elsewhere": [n[0]]}}, "elsewhere"),
        (lambda r, n: {**r, "graph_function_ids": [n[0], n[0]]}, "listed twice"),
        (lambda r, n: {**r, "graph_function_ids": [n[0], n[1]],
                       "graph_connection_data": {}}, "exactly one node"),
        (lambda r, n: {**r, "graph_function_ids": []}, "graph_function_ids"),
        (lambda r, n: {**r, "graph_function_ids": [f"p{i}" for i in range(65)]},
         "graph_function_ids"),
        (lambda r, n: {**r, "graph_uri": "other:v1-stable"}, "does not match"),
        (lambda r, n: {**r, "graph_name": "bad name!"}, "graph_name"),
        (lambda r, n: {**r, "graph_metadata": {"$where": "1"}}, "$where"),
        (lambda r, n: {**r, "a.b": 1}, "'a.b'"),
        (lambda r, n: {**r, **{f"extra{i}": i for i in range(120)}}, "at most 100"),
        (lambda r, n: ["not", "a", "record"], "JSON object"),
    ],
)
def test_a_hostile_record_is_refused_naming_the_field(
    api: httpx.Client, name: str, nodes: dict[str, str], change: Any, needle: str
) -> None:
    n = [nodes["a"], nodes["b"]]
    response = api.post("/graphs", json=change(graph_record(name, [n[0]], {}), n))
    assert response.status_code == 422, response.text
    assert response.json()["success"] is False and needle in response.json()["message"]


def test_an_update_names_the_graph_it_replaces(api: httpx.Client, name: str,
                                               nodes: dict[str, str]) -> None:
    a = nodes["a"]
    uri = created(api, graph_record(name, [a], {}))
    other = api.put(f"/graphs/{uri}", json=graph_record(name, [a], {}, version="v0.0.2"))
    assert other.status_code == 422 and "replaces" in other.json()["message"]
    missing = api.put(f"/graphs/{name}:v0.0.2-stable",
                      json=graph_record(name, [a], {}, version="v0.0.2"))
    assert missing.status_code == 404 and "POST /graphs" in missing.json()["message"]


# -- what is not served -----------------------------------------------------------------
def test_read_function_is_not_found(api: httpx.Client) -> None:
    """apis.py ``read_function``: ``GET /function/<id>``; 404 ``{"success": false,
    "message"}`` as upstream answers a function it does not hold; none is ever deployed."""
    response = api.get("/function/aiosv1.fn")
    assert response.status_code == 404
    assert response.json()["success"] is False
    assert "POST /execute_policy" in response.json()["message"]


@pytest.mark.parametrize(("method", "path"), [(m, p) for m, p, *_ in REFUSED_ROUTES])
def test_deployments_jobs_infra_and_estimates_answer_501(
    api: httpx.Client, method: str, path: str
) -> None:
    """apis.py's deployment, ``call_function``, logs, jobs, infrastructure and estimate
    routes (which proxy to an executor, executor_proxy.py ``ExecutorProxyClient``):
    501 in upstream's envelope, the message saying what this runtime does instead."""
    url = path.replace("{executor_id}", "ex-1").replace("{name}", "fn").replace(
        "{function_name}", "fn").replace("{job_id}", "job-1")
    response = api.request(method, url, json={"name": "fn", "policy_rule_uri": "x:v1"})
    assert response.status_code == 501, response.text
    body = response.json()
    assert body["success"] is False
    assert "this runtime" in body["message"] and "POST /" in body["message"]


# -- tokens -----------------------------------------------------------------------------
NEW_ROUTES = [
    ("POST", "/graphs"), ("GET", "/graphs/x:v1-stable"), ("PUT", "/graphs/x:v1-stable"),
    ("DELETE", "/graphs/x:v1-stable"), ("POST", "/graphs/query"),
    ("POST", "/graph/execute_graph"), ("GET", "/function/fn"), ("POST", "/function/query"),
    ("POST", "/function/call_function/fn"), ("POST", "/jobs/submit/ex-1"),
]


@pytest.mark.parametrize(("method", "path"), NEW_ROUTES)
def test_upstream_requests_need_the_bearer_header(server: RuntimeServer, method: str,
                                                  path: str) -> None:
    """Sent as upstream sends it (no header), every route is refused: 401."""
    response = httpx.request(method, server.url + path, json={}, timeout=30)
    assert response.status_code == 401, response.text


def test_roles_read_write_and_execute_as_for_policies(
    server: RuntimeServer, api: httpx.Client, tokens: dict[str, str], name: str,
    nodes: dict[str, str],
) -> None:
    """A reader reads and queries, an operator writes, an executor executes: each is
    refused (403, naming the permission) the others."""
    record = graph_record(name, *diamond(nodes))
    run = {"graph_uri": record["graph_uri"], "input_data": {"gpus": 1}}

    def call(role: str, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {tokens[role]}"}
        return httpx.request(method, server.url + path, json=body, headers=headers, timeout=30)

    uri = record["graph_uri"]
    refused = [
        ("reader", "POST", "/graphs", record, "policies:publish"),
        ("executor", "POST", "/graphs", record, "policies:publish"),
        ("reader", "POST", "/graph/execute_graph", run, "policies:eval"),
        ("executor", "GET", f"/graphs/{uri}", None, "policies:read"),
        ("executor", "POST", "/graphs/query", {}, "policies:read"),
        ("reader", "DELETE", f"/graphs/{uri}", None, "policies:delete"),
    ]
    assert call("operator", "POST", "/graphs", record).status_code == 200
    for role, method, path, body, permission in refused:
        response = call(role, method, path, body)
        assert response.status_code == 403, (role, path, response.text)
        assert response.json()["permission"] == permission
    assert call("reader", "GET", f"/graphs/{uri}").status_code == 200
    assert call("reader", "POST", "/graphs/query", {"graph_name": name}).status_code == 200
    assert call("executor", "POST", "/graph/execute_graph", run).status_code == 200
    assert call("operator", "DELETE", f"/graphs/{uri}").status_code == 200
