"""A few small requests cannot bloat a cluster document or the answers about it."""

from __future__ import annotations

import secrets

import httpx
import pytest
from conftest import seed_cluster

from policy_runtime.clusters.operators import MAX_ARRAY_INDEX
from policy_runtime.clusters.store import MAX_DOCUMENT_BYTES, MAX_REPORTED_ERRORS


@pytest.fixture()
def cluster_id(api: httpx.Client) -> str:
    identifier = f"bloat-{secrets.token_hex(4)}"
    assert api.post("/clusters", json=seed_cluster(identifier)).status_code == 201
    return identifier


def test_a_far_array_index_is_refused_in_a_short_answer(api: httpx.Client,
                                                        cluster_id: str) -> None:
    before = api.get(f"/clusters/{cluster_id}").json()
    for field in ("tags.100000", "nodes.nodeData.20000.id", f"tags.{MAX_ARRAY_INDEX + 1}"):
        response = api.put(f"/clusters/{cluster_id}", json={"$set": {field: "x"}})
        assert response.status_code == 400, response.text[:500]
        assert "array index" in response.json()["detail"] and len(response.content) < 1000
    assert api.get(f"/clusters/{cluster_id}").json() == before


def test_many_invalid_fields_are_summarised(api: httpx.Client, cluster_id: str) -> None:
    """An index within the bound still pads the array with nulls: the answer names the
    first errors and how many more, never all of them."""
    response = api.put(f"/clusters/{cluster_id}", json={"$set": {"tags.5000": "x"}})
    assert response.status_code == 422
    body = response.json()
    assert len(body["errors"]) == MAX_REPORTED_ERRORS and "more)" in body["detail"]
    assert len(response.content) < 10_000


def test_a_document_cannot_grow_past_the_limit(api: httpx.Client, cluster_id: str) -> None:
    chunk = ["t" * 1000] * 900  # about 0.9 MB per request, under the body limit
    refused = None
    for _ in range(MAX_DOCUMENT_BYTES // (1000 * 900) + 2):
        response = api.put(f"/clusters/{cluster_id}",
                           json={"$push": {"tags": {"$each": chunk}}})
        if response.status_code != 200:
            refused = response
            break
    assert refused is not None and refused.status_code == 422, "the limit was never reached"
    assert f"the limit is {MAX_DOCUMENT_BYTES}" in refused.json()["detail"]
    assert len(refused.content) < 1000
    stored = api.get(f"/clusters/{cluster_id}")
    assert stored.status_code == 200 and len(stored.content) <= MAX_DOCUMENT_BYTES
    # still governable: a small update goes through
    assert api.put(f"/clusters/{cluster_id}",
                   json={"$set": {"reputation": 1}}).status_code == 200


def test_creating_an_oversized_document_is_refused(api: httpx.Client) -> None:
    """The body limit (1 MiB by default) keeps creation well under the document limit;
    the document check is what a larger AIOS_MAX_BODY_BYTES would meet."""
    document = {**seed_cluster(f"bloat-{secrets.token_hex(4)}"), "tags": ["t" * 1000] * 1100}
    response = api.post("/clusters", json=document)
    assert response.status_code == 413
