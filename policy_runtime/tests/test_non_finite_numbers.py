"""Values the service cannot store or carry — NaN and Infinity (not JSON), lone
surrogates, integers beyond 64 bits, bodies nested too deep — are refused on every route
with a 422 naming the field: nothing is stored, no 500, and no sandbox worker dies."""

from __future__ import annotations

import json
import re
import secrets

import httpx
import pytest
from conftest import seed_cluster
from policy_sources import ALLOW_ALL
from test_api import published

from policy_runtime.api.strict_json import MAX_DEPTH, unstorable_value
from policy_runtime.errors import InvalidInput
from policy_runtime.sandbox.pool import PolicyCall, WorkerPool

JSON = {"content-type": "application/json"}


def post_raw(api: httpx.Client, method: str, path: str, text: str) -> httpx.Response:
    return api.request(method, path, content=text.encode(), headers=JSON)


def restarts(api: httpx.Client) -> float:
    metrics = api.get("/metrics").text
    return sum(float(v) for v in re.findall(
        r"^aios_sandbox_worker_restarts_total\{[^}]*\} (\S+)$", metrics, re.M))


def cluster_text(cluster_id: str, field: str, token: str) -> str:
    """The seed cluster as JSON text with ``field`` set to a bare NaN/Infinity token."""
    document = seed_cluster(cluster_id)
    document[field] = "@@token@@"
    return json.dumps(document).replace('"@@token@@"', token)


@pytest.mark.parametrize(("field", "token"), [
    ("reputation", "NaN"), ("memory", "Infinity"), ("swap", "-Infinity"),
])
def test_a_cluster_with_a_non_finite_number_is_refused(api: httpx.Client, field: str,
                                                       token: str) -> None:
    cluster_id = f"nonfinite-{secrets.token_hex(4)}"
    response = post_raw(api, "POST", "/clusters", cluster_text(cluster_id, field, token))
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", field] and token in error["msg"]
    assert api.get(f"/clusters/{cluster_id}").status_code == 404


@pytest.mark.parametrize("text", [
    '{"$set": {"reputation": NaN}}',
    '{"$set": {"tags": ["a", Infinity]}}',
    '{"$inc": {"memory": -Infinity}}',
    '{"$set": {"reputation": "nan"}}',
    '{"$set": {"memory": "Infinity"}}',
])
def test_updates_cannot_store_a_non_finite_number(api: httpx.Client, text: str) -> None:
    cluster_id = f"nonfinite-{secrets.token_hex(4)}"
    assert api.post("/clusters", json=seed_cluster(cluster_id)).status_code == 201
    before = api.get(f"/clusters/{cluster_id}").json()
    response = post_raw(api, "PUT", f"/clusters/{cluster_id}", text)
    assert response.status_code == 422, response.text
    assert "finite" in response.text
    assert api.get(f"/clusters/{cluster_id}").json() == before
    # and the cluster stays updatable: nothing poisoned it
    assert api.put(f"/clusters/{cluster_id}", json={"$set": {"reputation": 5}}).status_code == 200


def test_an_evaluation_input_with_nan_is_a_422_and_no_worker_dies(
        api: httpx.Client, unique_name: str) -> None:
    uri = published(api, unique_name, ALLOW_ALL)
    before = restarts(api)
    for _ in range(20):
        response = post_raw(api, "POST", f"/policies/{uri}/eval",
                            '{"input_data": {"values": [1, 2, NaN]}}')
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "input_data", "values", 2]
    assert restarts(api) == before
    fine = api.post(f"/policies/{uri}/eval", json={"input_data": {"values": [1, 2, 3]}})
    assert fine.status_code == 200 and fine.json()["ok"] is True


def test_the_words_inside_strings_are_fine(api: httpx.Client) -> None:
    cluster_id = f"nonfinite-{secrets.token_hex(4)}"
    document = {**seed_cluster(cluster_id), "tags": ["NaN", "Infinity", "-Infinity"]}
    assert api.post("/clusters", json=document).status_code == 201
    assert api.get(f"/clusters/{cluster_id}").json()["tags"] == ["NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize(("body", "path", "needle"), [
    (b'{"a": 1, "id": "12345678901234567890", "b": [[{}]]}', None, None),
    (b'{"a": "NaN", "b": "\\ud83d\\ude00"}', None, None),
    (b'{"a": [{"b": NaN}]}', ["a", 0, "b"], "NaN is not a JSON number"),
    (b'[Infinity]', [0], "Infinity is not a JSON number"),
    (b'{"a": -Infinity}', ["a"], "-Infinity is not"),
    (b'{"a": ["x", "\\ud800"]}', ["a", 1], "lone UTF-16 surrogate"),
    (b'{"\\udfff": 1}', ["?"], "lone UTF-16 surrogate"),
    (b'{"n": 9223372036854775808}', ["n"], "64 bits"),
    (b'{"n": -9223372036854775809}', ["n"], "64 bits"),
    (b'{"n": 9223372036854775807, "m": -9223372036854775808}', None, None),
    (b'{"a": ' + b'[' * 120 + b']' * 120 + b'}', ["a"] + [0] * (MAX_DEPTH - 1), "nested deeper"),
    (b'{"a": ' + b'[' * 90 + b']' * 90 + b'}', None, None),
    (b'not json NaN', None, None),
])
def test_finding_the_field(body: bytes, path: object, needle: str | None) -> None:
    found = unstorable_value(body)
    if needle is None:
        assert found is None
    else:
        assert found is not None and found[0] == path and needle in found[1], found


@pytest.mark.parametrize(("method", "path", "text", "loc"), [
    ("POST", "/clusters/query", '{"id": "\\ud800"}', ["body", "id"]),
    ("POST", "/clusters/query", '{"vcpus.count": {"$gt": 99999999999999999999}}',
     ["body", "vcpus.count", "$gt"]),
    ("POST", "/clusters/query", '{"$and": ' + "[{" * 60 + "}]" * 60 + "}", None),
    ("POST", "/policies", '{"name": "x\\udc00", "version": "v1", "code": ""}', ["body", "name"]),
])
def test_other_routes_refuse_unstorable_values(api: httpx.Client, method: str, path: str,
                                               text: str, loc: list | None) -> None:
    response = post_raw(api, method, path, text)
    assert response.status_code == 422, response.text
    if loc is not None:
        assert response.json()["detail"][0]["loc"] == loc


def test_the_pool_refuses_what_cannot_reach_a_worker(pool: WorkerPool) -> None:
    """Defence in depth: a call holding NaN (e.g. from a non-HTTP caller) is InvalidInput,
    and the worker that would have run it is kept."""
    before = pool.worker_pids()
    call = PolicyCall(op="eval", source=ALLOW_ALL, rule_id="r",
                      settings={}, parameters={}, input_data={"x": float("nan")},
                      timeout_seconds=2, memory_mb=256)
    with pytest.raises(InvalidInput, match="finite numbers"):
        pool.call(call)
    assert pool.worker_pids() == before
