"""The clusters registry over HTTP: CRUD, update syntax, queries, operator allow-list."""

from __future__ import annotations

import copy
import json
import secrets
import threading

import httpx
import pytest
from conftest import SEED_CLUSTER
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SEED = json.loads(SEED_CLUSTER.read_text())


@pytest.fixture()
def cluster(api: httpx.Client) -> dict:
    document = {**copy.deepcopy(SEED), "id": f"cluster-{secrets.token_hex(4)}"}
    response = api.post("/clusters", json=document)
    assert response.status_code == 201, response.text
    return response.json()


def test_create_read_delete(api: httpx.Client, cluster: dict) -> None:
    assert api.get(f"/clusters/{cluster['id']}").json() == cluster
    assert cluster["nodes"] == SEED["nodes"]
    again = api.post("/clusters", json=cluster)
    assert again.status_code == 409 and cluster["id"] in again.json()["detail"]
    deleted = api.delete(f"/clusters/{cluster['id']}")
    assert deleted.status_code == 200 and deleted.json() == {"message": "Cluster deleted"}
    assert api.get(f"/clusters/{cluster['id']}").status_code == 404
    assert api.delete(f"/clusters/{cluster['id']}").status_code == 404


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"status": None}, "status"),
        ({"gpus": {"count": "many", "memory": 1}}, "gpus.count"),
        ({"extra": 1}, "extra"),
        ({"tags": ["a"], "clusterMetadata": {"name": "x"}}, "clusterMetadata.description"),
        ({"config": {**SEED["config"], "customPolicySystem": {"$where": "1"}}}, "$"),
        ({"clusterMetadata": {**SEED["clusterMetadata"], "additionalInfo": {"a.b": 1}}}, "'a.b'"),
    ],
)
def test_create_refuses_invalid_documents(api: httpx.Client, change: dict, needle: str) -> None:
    document = {**copy.deepcopy(SEED), "id": f"bad-{secrets.token_hex(4)}", **change}
    response = api.post("/clusters", json=document)
    assert response.status_code == 422
    assert needle in response.json()["detail"]
    assert api.get(f"/clusters/{document['id']}").status_code == 404


def test_update_with_the_seeds_example(api: httpx.Client, cluster: dict) -> None:
    response = api.put(
        f"/clusters/{cluster['id']}", json={"$set": {"tags": ["gpu", "updated"], "reputation": 97}}
    )
    assert response.status_code == 200
    assert response.json()["tags"] == ["gpu", "updated"] and response.json()["reputation"] == 97
    pushed = api.put(f"/clusters/{cluster['id']}",
                     json={"$push": {"tags": {"$each": ["a", "b"]}}, "$inc": {"reputation": 1}})
    assert pushed.json()["tags"] == ["gpu", "updated", "a", "b"]
    assert pushed.json()["reputation"] == 98
    assert api.get(f"/clusters/{cluster['id']}").json() == pushed.json()


@pytest.mark.parametrize(
    ("update", "status", "needle"),
    [
        ({"$set": {"status": 5}}, 422, "status"),
        ({"$unset": {"config": ""}}, 422, "config"),
        ({"$inc": {"status": 1}}, 422, "non-numeric"),
        ({"$set": {"id": "other"}}, 400, "cannot be changed"),
        ({"$rename": {"tags": "labels"}}, 400, "$rename is not allowed"),
        ({"$where": "1"}, 400, "$where is not allowed"),
        ({"tags": ["no operator"]}, 400, "operator tags is not allowed"),
        ({}, 400, "non-empty object"),
        ({"$set": {"$where": 1}}, 400, "not a valid field name"),
        ({"$set": {"clusterMetadata.additionalInfo": {"$gt": 1}}}, 400, "may not start with $"),
        ({"$set": {"tags..x": 1}}, 400, "not a valid field name"),
        ({"$set": {"reputation": 2**70}}, 422, "does not fit in 64 bits"),
    ],
)
def test_rejected_updates_change_nothing(
    api: httpx.Client, cluster: dict, update: dict, status: int, needle: str
) -> None:
    response = api.put(f"/clusters/{cluster['id']}", json=update)
    assert response.status_code == status, response.text
    assert needle in response.text
    assert api.get(f"/clusters/{cluster['id']}").json() == cluster


def test_update_of_a_missing_cluster(api: httpx.Client) -> None:
    response = api.put("/clusters/does-not-exist", json={"$set": {"status": "x"}})
    assert response.status_code == 404


def test_concurrent_updates_lose_nothing(api: httpx.Client, server, cluster: dict) -> None:
    def bump(index: int) -> None:
        with server.client() as client:
            response = client.put(f"/clusters/{cluster['id']}",
                                  json={"$inc": {"reputation": 1}, "$push": {"tags": f"t{index}"}})
            assert response.status_code == 200, response.text

    threads = [threading.Thread(target=bump, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = api.get(f"/clusters/{cluster['id']}").json()
    assert final["reputation"] == cluster["reputation"] + 16
    assert set(final["tags"]) == set(cluster["tags"]) | {f"t{i}" for i in range(16)}


# Paths of the document and values of the wrong type for each: any combination is invalid.
# (Numeric strings are not wrong: like upstream's Mongoose schema, "5" is stored as 5.)
words = st.text(alphabet="abcdefghij", min_size=1, max_size=5)
WRONG = {
    "status": st.integers() | st.none() | st.lists(st.text(), max_size=2),
    "gpus.count": words | st.integers(max_value=-1),
    "config.urlMap.publicGateway": st.integers() | st.none(),
    "nodes.nodeData.0.memory": words | st.integers(max_value=-1),
    "clusterMetadata.owner": st.integers() | st.booleans(),
    "config.policyExecutionMode": words.filter(lambda t: t not in ("local", "remote")),
}
invalid_updates = st.one_of(
    st.sampled_from(sorted(WRONG)).flatmap(
        lambda path: WRONG[path].map(lambda value: {"$set": {path: value}})
    ),
    st.sampled_from(["status", "config", "nodes", "clusterMetadata.name", "tags"]).map(
        lambda path: {"$unset": {path: ""}}
    ),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(update=invalid_updates)
def test_property_an_invalid_update_never_changes_the_document(
    api: httpx.Client, cluster: dict, update: dict
) -> None:
    response = api.put(f"/clusters/{cluster['id']}", json=update)
    assert response.status_code in (400, 422), (update, response.text)
    assert api.get(f"/clusters/{cluster['id']}").json() == cluster


# -- queries ------------------------------------------------------------------------------
@pytest.fixture()
def region(api: httpx.Client) -> str:
    """Three clusters in a region of their own, with 1, 2 and 3 GPUs."""
    region = f"region-{secrets.token_hex(4)}"
    for count in (1, 2, 3):
        document = {**copy.deepcopy(SEED), "id": f"{region}-{count}", "regionId": region,
                    "gpus": {"count": count, "memory": 16384 * count}}
        assert api.post("/clusters", json=document).status_code == 201
    return region


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [d["id"] for d in response.json()]


def test_query_with_the_seeds_filter(api: httpx.Client, region: str) -> None:
    body = {"regionId": region, "gpus.count": {"$gte": 2},
            "clusterMetadata.countries": {"$in": ["USA"]}}
    assert sorted(ids(api.post("/clusters/query", json=body))) == [f"{region}-2", f"{region}-3"]
    wrapped = api.post("/clusters/query", json={"query": body})
    assert sorted(ids(wrapped)) == [f"{region}-2", f"{region}-3"]


def test_query_options(api: httpx.Client, region: str) -> None:
    body = {"regionId": region}
    ordered = api.post("/clusters/query", json=body, params={"sort": "-gpus.count"})
    assert ids(ordered) == [f"{region}-3", f"{region}-2", f"{region}-1"]
    page = api.post("/clusters/query", json=body, params={"sort": "id", "skip": 1, "limit": 1})
    assert ids(page) == [f"{region}-2"]
    slim = api.post("/clusters/query", json=body, params={"fields": "id,gpus.count", "sort": "id"})
    assert slim.json()[0] == {"id": f"{region}-1", "gpus": {"count": 1}}
    assert api.post("/clusters/query", json=body, params={"limit": 1001}).status_code == 422
    regex = api.post("/clusters/query", json={"id": {"$regex": f"^{region}-[12]$"}})
    assert sorted(ids(regex)) == [f"{region}-1", f"{region}-2"]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"$where": "sleep(1000)"}, "$where"),
        ({"$expr": {"$gt": ["$gpus.count", 1]}}, "$expr"),
        ({"$jsonSchema": {"properties": {}}}, "$jsonSchema"),
        ({"$and": [{"$or": [{"gpus": {"$function": {"body": "x"}}}]}]}, "$function"),
        ({"nodes.nodeData": {"$elemMatch": {"$accumulator": {}}}}, "$accumulator"),
        ({"query": {"tags": {"$nin": [{"$where": "1"}]}}}, "$where"),
        ({"$unknown": 1}, "$unknown"),
        ({"": 1}, "not a valid field name"),
    ],
)
def test_query_operator_injection_is_refused(api: httpx.Client, body: dict, needle: str) -> None:
    response = api.post("/clusters/query", json=body)
    assert response.status_code == 400, response.text
    assert needle in response.json()["detail"]


@pytest.mark.parametrize("params", [{"sort": "$natural"}, {"fields": "_rev"}, {"sort": "-"}])
def test_query_options_are_checked(api: httpx.Client, params: dict) -> None:
    assert api.post("/clusters/query", json={}, params=params).status_code == 400


# -- the upstream parser's route ------------------------------------------------------------
def test_create_cluster_upstream_route(api: httpx.Client) -> None:
    raw = {**copy.deepcopy(SEED), "id": f"raw-{secrets.token_hex(4)}"}
    response = api.post("/api/createCluster", json=raw)
    assert response.status_code == 200 and response.json()["success"] is True
    wrapped = {**copy.deepcopy(SEED), "id": f"env-{secrets.token_hex(4)}"}
    envelope = {"header": {"templateUri": "Parser/V1", "parameters": {}},
                "body": {"spec": {"values": wrapped}}}
    response = api.post("/api/createCluster", json=envelope)
    assert response.status_code == 200 and response.json()["data"]["id"] == wrapped["id"]
    duplicate = api.post("/api/createCluster", json=envelope)
    assert duplicate.status_code == 409, "a failed create is a failure, never success: true"
    broken = api.post("/api/createCluster", json={"header": {"templateUri": "Parser/V1"},
                                                  "body": {}})
    assert broken.status_code == 422 and "body.spec.values" in broken.json()["detail"]


def test_list_clusters_pages_and_filters(api: httpx.Client) -> None:
    """GET /clusters: the shape of GET /policies, per-node data left out, bounded paging."""
    run = secrets.token_hex(3)
    made = []
    for index, (region, status, tags) in enumerate([
        (f"eu-{run}", "live", ["gpu", f"t-{run}"]),
        (f"eu-{run}", "draining", [f"t-{run}"]),
        (f"us-{run}", "live", ["gpu", f"t-{run}"]),
    ]):
        document = {**copy.deepcopy(SEED), "id": f"list-{run}-{index}", "regionId": region,
                    "status": status, "tags": tags}
        assert api.post("/clusters", json=document).status_code == 201
        made.append(document["id"])

    page = api.get("/clusters", params={"tag": f"t-{run}"})
    assert page.status_code == 200, page.text
    body = page.json()
    assert set(body) == {"total", "skip", "limit", "items"}
    assert body["total"] == 3 and body["skip"] == 0 and body["limit"] == 50
    assert [c["id"] for c in body["items"]] == made, "ordered by id"
    first = body["items"][0]
    assert "nodeData" not in first["nodes"] and first["nodes"]["count"] == SEED["nodes"]["count"]
    assert first["gpus"] == SEED["gpus"] and "_rev" not in first and "_id" not in first

    def ids(**params: object) -> list[str]:
        response = api.get("/clusters", params={"tag": f"t-{run}", **params})
        assert response.status_code == 200, response.text
        return [c["id"] for c in response.json()["items"]]

    assert ids(region=f"eu-{run}") == made[:2]
    assert ids(status="live") == [made[0], made[2]]
    assert ids(region=f"eu-{run}", status="live") == [made[0]]
    assert ids(skip=1, limit=1) == [made[1]]
    assert ids(region="nowhere") == []
    listed_all = api.get("/clusters", params={"limit": 500}).json()
    assert set(made) <= {c["id"] for c in listed_all["items"]} and listed_all["total"] >= 3


@pytest.mark.parametrize("params", [
    {"limit": 0}, {"limit": 501}, {"skip": -1}, {"skip": 10**9 + 1},
    {"region": "r" * 201}, {"tag": "t" * 201},
])
def test_list_clusters_refuses_unbounded_paging(api: httpx.Client, params: dict) -> None:
    response = api.get("/clusters", params=params)
    assert response.status_code == 422, response.text
    assert next(iter(params)) in response.text


def test_list_filters_are_literal_values_not_operators(api: httpx.Client, cluster: dict) -> None:
    response = api.get("/clusters", params={"region": '{"$ne": null}', "limit": 500})
    assert response.status_code == 200 and response.json()["total"] == 0
