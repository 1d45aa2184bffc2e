"""Property-based fuzzing of every API route from the OpenAPI schema (schemathesis).

Every operation the app documents gets generated requests, valid and invalid, sent to a
real server process with the token; no answer may be a 5xx. AIOS_FUZZ_EXAMPLES sets the
examples per operation (``make soak`` raises it). The number of requests sent is printed
at the end of the session.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest
import schemathesis
from conftest import RuntimeServer
from hypothesis import HealthCheck, given, settings

from policy_runtime.api.app import create_app
from policy_runtime.config import Settings

EXAMPLES = int(os.environ.get("AIOS_FUZZ_EXAMPLES", "20"))
FUZZ_COUNTS = {"cases": 0, "operations": set()}


def _app():
    return create_app(Settings(insecure_no_auth=True, run_modes="policies,clusters,controller"))


# schemathesis' own pytest plugin does not follow pytest 9 yet: each operation is a test
# here, and hypothesis drives its strategy directly.
OPERATIONS = {result.ok().label: result.ok()
              for result in schemathesis.openapi.from_dict(_app().openapi()).get_all_operations()}


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_no_generated_request_gets_a_5xx(label: str, server: RuntimeServer) -> None:
    headers = {"Authorization": f"Bearer {server.token}"}

    @given(case=OPERATIONS[label].as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def no_5xx(case) -> None:
        response = case.call(base_url=server.url, headers=headers, timeout=30)
        FUZZ_COUNTS["cases"] += 1
        FUZZ_COUNTS["operations"].add(label)
        assert response.status_code < 500, (
            f"{label} answered {response.status_code}: {response.text[:500]}\n"
            f"reproduce: {case.as_curl_command()}"
        )

    no_5xx()


@pytest.mark.parametrize("depth", [5_000, 100_000])  # beyond the parser's recursion limit
def test_deeply_nested_json_is_a_422(api: httpx.Client, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    for path in ("/policies", "/clusters", "/clusters/query", "/policies/p:v1-stable/eval",
                 "/pre-check/add_node"):
        response = api.post(path, content=nested, headers={"Content-Type": "application/json"})
        assert response.status_code in (413, 422), (path, response.status_code, response.text)
        if len(nested) < 64 * 1024:
            assert response.status_code == 422
    assert api.get("/healthz").status_code == 200, "the server survived"


def test_oversized_bodies_are_a_413_on_every_writing_route(api: httpx.Client) -> None:
    body = json.dumps({"blob": "x" * (12 * 1024 * 1024)})
    for path, operations in _app().openapi()["paths"].items():
        for method in set(operations) & {"post", "put", "patch"}:
            concrete = path.replace("{uri}", "p:v1-stable").replace("{cluster_id}", "c-1")
            concrete = concrete.replace("{action}", "add_node").replace("{node_id}", "n-1")
            concrete = concrete.replace("{executor_id}", "e-1")
            response = api.request(method.upper(), concrete, content=body,
                                   headers={"Content-Type": "application/json"})
            assert response.status_code == 413, (method, concrete, response.status_code)


def test_parseable_but_deep_documents_are_refused_naming_the_field(api: httpx.Client) -> None:
    deep: dict = {}
    for _ in range(300):
        deep = {"a": deep}
    published = api.post("/policies", json={"name": "deep", "version": "v1", "code": "x",
                                            "policy_parameters": deep})
    assert published.status_code == 422
    assert published.json()["detail"][0]["loc"][:3] == ["body", "policy_parameters", "a"]
    assert "nested deeper than 100 levels" in published.text
    queried = api.post("/clusters/query", json={"filter": deep})
    assert queried.status_code == 422 and "nested deeper than 100 levels" in queried.text
    shallower: dict = {}
    for _ in range(40):
        shallower = {"a": shallower}
    queried = api.post("/clusters/query", json={"filter": shallower})
    assert queried.status_code == 400 and "nested deeper than 32 levels" in queried.text
