"""The HTTP API end to end: a real server process on a real wire-protocol database."""

from __future__ import annotations

import base64
import io
import re
import tarfile
import zipfile

import httpx
import pytest
from conftest import RuntimeServer
from policy_sources import ALLOW_ALL, eval_body

from policy_runtime.api.app import create_app
from policy_runtime.api.routes.system import PUBLIC_PATHS
from policy_runtime.config import Settings


def publish(api: httpx.Client, policy_name: str, code: str = ALLOW_ALL, **fields: object):
    body = {"name": policy_name, "version": "v0.0.1", "release_tag": "stable", "code": code}
    body.update(fields)
    return api.post("/policies", json=body)


def published(api: httpx.Client, policy_name: str, code: str = ALLOW_ALL, **fields: object):
    response = publish(api, policy_name, code, **fields)
    assert response.status_code == 201, response.text
    return response.json()["policy_rule_uri"]


# -- authentication ---------------------------------------------------------------------
def _protected_routes() -> list[tuple[str, str]]:
    """Every route the app serves, documented or not (the docs pages, the upstream aliases),
    with concrete path parameters: a route added later is enumerated here by itself."""
    app = create_app(Settings(insecure_no_auth=True, run_modes="policies,clusters,controller"))
    routes = []
    for route in _served(app.routes):
        if route.path in PUBLIC_PATHS:
            continue
        concrete = re.sub(r"\{[^}]+\}", lambda m: SAMPLE_PARAMETERS.get(m.group(0), "x-1"),
                          route.path)
        routes.extend((method, concrete) for method in sorted(route.methods - {"HEAD"}))
    return routes


SAMPLE_PARAMETERS = {"{uri}": "p:v1-stable", "{cluster_id}": "c-1", "{action}": "add_node"}


def _served(routes: list) -> list:
    """Routes with path and methods; FastAPI keeps included routers as one entry each,
    whose effective_candidates() are the routes it serves."""
    flat = []
    for route in routes:
        if hasattr(route, "effective_candidates"):
            flat.extend(route.effective_candidates())
        else:
            flat.append(route)
    return flat


PROTECTED = _protected_routes()


def test_every_route_but_health_and_version_is_protected() -> None:
    paths = {path for _, path in PROTECTED}
    assert {"/policies", "/policies/p:v1-stable/eval", "/execute_policy", "/metrics",
            "/clusters", "/clusters/query", "/api/createCluster", "/pre-check/add_node",
            "/clusters/update/c-1", "/decisions", "/mgmt", "/nodes-data"} <= paths
    assert {"/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"} <= paths
    assert len(PROTECTED) > 30


@pytest.mark.parametrize(
    "header", [None, "Bearer wrong-token", "Basic abc", "Bearer", "Bearer {token}x", "{token}"]
)
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_protected_route_refuses_without_the_token(
    server: RuntimeServer, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header.format(token=server.token)} if header else {}
    response = httpx.request(method, server.url + path, headers=headers, json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_health_and_version_need_no_token(server: RuntimeServer) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok", "database": "ok"}
    version = httpx.get(f"{server.url}/version").json()
    assert set(version) == {"version", "git_commit", "build_date", "run_modes"}
    assert version["run_modes"] == ["policies", "clusters", "controller"]


def test_openapi_documents_the_bearer_scheme(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    assert "/policies/{uri}/eval" in spec["paths"]
    schemes = spec["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())


# -- publishing -------------------------------------------------------------------------
def test_publish_is_idempotent_and_immutable(api: httpx.Client, unique_name: str) -> None:
    first = publish(api, unique_name)
    assert first.status_code == 201
    assert first.json() == {"policy_rule_uri": f"{unique_name}:v0.0.1-stable", "created": True}
    again = publish(api, unique_name)
    assert again.status_code == 200 and again.json()["created"] is False
    changed = publish(api, unique_name, code=ALLOW_ALL + "\n# changed\n")
    assert changed.status_code == 409
    assert "immutable" in changed.json()["detail"]


def test_stored_document_uses_upstream_field_names(api: httpx.Client, unique_name: str) -> None:
    uri = published(
        api, unique_name, tags="precheck, add_node", policy_settings={"timeout_seconds": 1},
        policy_parameters={"min": 2}, type="precheck", description="d", metadata={"team": "x"},
    )
    document = api.get(f"/policies/{uri}").json()
    assert document["policy_rule_uri"] == uri
    assert document["tags"] == ["precheck", "add_node"]
    assert document["code"] == ALLOW_ALL
    assert len(document["code_sha256"]) == 64 and document["created_at"]
    for field in ("name", "version", "release_tag", "code_type", "type", "description",
                  "metadata", "policy_settings", "policy_parameters", "policy_input_schema",
                  "policy_output_schema", "policy_settings_schema", "policy_parameters_schema"):
        assert field in document
    assert "_id" not in document


def test_uri_without_release_tag(api: httpx.Client, unique_name: str) -> None:
    response = api.post(
        "/policies", json={"name": unique_name, "version": "v0.0.1", "code": ALLOW_ALL}
    )
    assert response.json()["policy_rule_uri"] == f"{unique_name}:v0.0.1"
    assert api.get(f"/policies/{unique_name}:v0.0.1").status_code == 200


@pytest.mark.parametrize(
    ("code", "error_type", "needle"),
    [
        ("def broken(:\n", "CompileError", "Line 1"),
        ("import os\nclass AIOSv1PolicyRule:\n    pass\n", "SandboxViolation", "'os'"),
        ("class Other:\n    pass\n", "InvalidPolicy", "AIOSv1PolicyRule"),
        ("class AIOSv1PolicyRule:\n    def __init__(self, rule_id, settings, parameters):\n"
         "        pass\n", "InvalidPolicy", "eval"),
    ],
)
def test_publish_refuses_bad_code_with_typed_error(
    api: httpx.Client, unique_name: str, code: str, error_type: str, needle: str
) -> None:
    response = publish(api, unique_name, code=code)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == error_type and needle in error["message"], error
    assert api.get(f"/policies/{unique_name}:v0.0.1-stable").status_code == 404


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"name": "bad name!"}, "name"),
        ({"version": "v1-rc"}, "version"),
        ({"code_type": "javascript"}, "code_type"),
        ({"unexpected": 1}, "unexpected"),
        ({"policy_rule_uri": "other:v1-x"}, "does not match"),
        ({"code": "https://example.com/policy.zip"}, "never fetches"),
        ({"code": None}, "exactly one of code"),
        ({"policy_input_schema": {"type": "no-such-type"}}, "policy_input_schema"),
    ],
)
def test_publish_validation_names_the_field(
    api: httpx.Client, unique_name: str, fields: dict, needle: str
) -> None:
    response = publish(api, unique_name, **fields)
    assert response.status_code == 422
    assert needle in response.text


def _zip(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


def _tar(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize("pack", [_zip, _tar], ids=["zip", "tar.gz"])
def test_publish_upstream_code_archive(api: httpx.Client, unique_name: str, pack) -> None:
    archive = pack({"code/function.py": ALLOW_ALL, "code/README.md": "docs"})
    response = publish(api, unique_name, code=None, code_archive=archive)
    assert response.status_code == 201, response.text
    uri = response.json()["policy_rule_uri"]
    assert api.get(f"/policies/{uri}").json()["code"] == ALLOW_ALL


@pytest.mark.parametrize(
    ("files", "needle"),
    [
        ({"code/function.py": ALLOW_ALL, "code/requirements.txt": "requests==2.0\n"},
         "cannot install packages"),
        ({"function.py": ALLOW_ALL}, "code/function.py"),
    ],
)
def test_publish_archive_refusals(
    api: httpx.Client, unique_name: str, files: dict, needle: str
) -> None:
    response = publish(api, unique_name, code=None, code_archive=_zip(files))
    assert response.status_code == 422
    assert needle in response.json()["detail"]


def test_publish_archive_not_base64(api: httpx.Client, unique_name: str) -> None:
    response = publish(api, unique_name, code=None, code_archive="%%%")
    assert response.status_code == 422 and "base64" in response.json()["detail"]


def test_code_size_limit(api: httpx.Client, unique_name: str) -> None:
    big = ALLOW_ALL + "#" * (300 * 1024) + "\n"
    response = publish(api, unique_name, code=big)
    assert response.status_code == 413
    assert "AIOS_MAX_CODE_BYTES" in response.json()["detail"]


def test_body_size_limit(api: httpx.Client) -> None:
    response = api.post(
        "/policies/x:v1/eval", json={"input_data": "x" * (2 * 1024 * 1024)}
    )
    assert response.status_code == 413


def test_malformed_json_says_where(api: httpx.Client) -> None:
    response = api.post(
        "/policies", content=b'{"name": "x",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["type"] == "json_invalid" and detail["loc"][0] == "body"


# -- reading, listing, deleting ----------------------------------------------------------
def test_list_filters_and_pages(api: httpx.Client, unique_name: str) -> None:
    for version in ("v1", "v2", "v3"):
        response = api.post(
            "/policies",
            json={"name": unique_name, "version": version, "code": ALLOW_ALL,
                  "tags": ["paged", version]},
        )
        assert response.status_code == 201
    page = api.get("/policies", params={"name": unique_name, "limit": 2}).json()
    assert page["total"] == 3 and len(page["items"]) == 2
    assert all("code" not in item for item in page["items"])
    rest = api.get("/policies", params={"name": unique_name, "limit": 2, "skip": 2}).json()
    uris = {i["policy_rule_uri"] for i in page["items"] + rest["items"]}
    assert uris == {f"{unique_name}:{v}" for v in ("v1", "v2", "v3")}
    tagged = api.get("/policies", params={"name": unique_name, "tag": "v2"}).json()
    assert [i["version"] for i in tagged["items"]] == ["v2"]
    assert api.get("/policies", params={"limit": 501}).status_code == 422


def test_delete_then_not_found(api: httpx.Client, unique_name: str) -> None:
    uri = published(api, unique_name)
    assert api.delete(f"/policies/{uri}").status_code == 204
    assert api.get(f"/policies/{uri}").status_code == 404
    assert api.delete(f"/policies/{uri}").status_code == 404
    missing = api.post(f"/policies/{uri}/eval", json={"input_data": {}})
    assert missing.status_code == 404 and uri in missing.json()["detail"]


# -- evaluating -------------------------------------------------------------------------
def test_eval_ok(api: httpx.Client, unique_name: str) -> None:
    uri = published(api, unique_name)
    response = api.post(f"/policies/{uri}/eval", json={"input_data": {"node": "n1"}})
    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    assert body["result"] == {"allowed": True, "input_data": {"node": "n1"}}
    assert body["duration_ms"] > 0


@pytest.mark.parametrize(
    ("body", "settings", "status", "error_type"),
    [
        ("raise ValueError('no capacity')", {}, 422, "PolicyError"),
        ("return getattr(1, '__class__')", {}, 422, "SandboxViolation"),
        ("while True:\n    pass", {"timeout_seconds": 0.3}, 504, "Timeout"),
        ("return len('a' * 1024**3)", {"memory_mb": 64}, 422, "MemoryLimit"),
    ],
)
def test_eval_failures_are_typed(
    api: httpx.Client, unique_name: str, body: str, settings: dict, status: int, error_type: str
) -> None:
    uri = published(api, unique_name, code=eval_body(body))
    response = api.post(f"/policies/{uri}/eval", json={"input_data": {}, "settings": settings})
    assert response.status_code == status
    assert response.json()["ok"] is False
    assert response.json()["error"]["type"] == error_type


def test_schemas_validate_input_and_output(api: httpx.Client, unique_name: str) -> None:
    uri = published(
        api,
        unique_name,
        code=eval_body("return {'allowed': input_data['n'] > 1}"),
        policy_input_schema={"n": {"type": "integer"}},
        policy_output_schema={"type": "object", "required": ["allowed", "reason"]},
    )
    bad_input = api.post(f"/policies/{uri}/eval", json={"input_data": {"n": "two"}})
    assert bad_input.status_code == 422
    assert bad_input.json()["error"]["type"] == "InvalidInput"
    assert "n" in bad_input.json()["error"]["message"]
    bad_output = api.post(f"/policies/{uri}/eval", json={"input_data": {"n": 2}})
    assert bad_output.json()["error"]["type"] == "InvalidOutput"
    assert "reason" in bad_output.json()["error"]["message"]


def test_eval_parameters_override_defaults(api: httpx.Client, unique_name: str) -> None:
    uri = published(
        api, unique_name, code=eval_body("return parameters['limit']"),
        policy_parameters={"limit": 3},
    )
    default = api.post(f"/policies/{uri}/eval", json={"input_data": None})
    override = api.post(f"/policies/{uri}/eval", json={"parameters": {"limit": 9}})
    assert default.json()["result"] == 3 and override.json()["result"] == 9


@pytest.mark.parametrize(
    ("content", "error_type", "loc"),
    [
        (b'{"input": {}}', "extra_forbidden", ["body", "input"]),
        (b'{"parameters": [1]}', "dict_type", ["body", "parameters"]),
        (b'{"input_data": ', "json_invalid", ["body"]),
        (b"[]", "model_type", ["body"]),
    ],
)
def test_eval_request_errors_say_where(
    api: httpx.Client, content: bytes, error_type: str, loc: list
) -> None:
    response = api.post(
        "/policies/x:v1/eval", content=content, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert detail["type"] == error_type and detail["loc"][: len(loc)] == loc, detail


def test_eval_body_is_documented(api: httpx.Client) -> None:
    operation = api.get("/openapi.json").json()["paths"]["/policies/{uri}/eval"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert {"input_data", "parameters", "settings"} <= set(schema["properties"])


# -- upstream compatibility ---------------------------------------------------------------
def test_upstream_routes_answer_the_upstream_envelope(api: httpx.Client, unique_name: str) -> None:
    created = api.post(
        "/policy",
        json={"name": unique_name, "version": "v0.0.1", "release_tag": "stable",
              "code": eval_body("return {'allowed': input_data['gpus'] >= parameters['min']}"),
              "tags": "a,b", "policy_parameters": {"min": 1}},
    )
    assert created.status_code == 200  # what upstream's PolicyDBClient checks
    assert created.json() == {
        "success": True,
        "data": {"policy_rule_uri": f"{unique_name}:v0.0.1-stable", "created": True},
    }
    uri = created.json()["data"]["policy_rule_uri"]
    execute = api.post(
        "/execute_policy",
        json={"policy_rule_uri": uri, "input_data": {"gpus": 2}, "parameters": {"min": 4}},
    )
    assert execute.json() == {"success": True, "data": {"allowed": False}}
    failed = api.post("/execute_policy", json={"policy_rule_uri": uri, "input_data": {}})
    assert failed.status_code == 422
    assert failed.json()["success"] is False
    assert failed.json()["message"].startswith("PolicyError: KeyError")
    read = api.get(f"/policy/{uri}").json()
    assert read["success"] is True and read["data"]["tags"] == "a,b"  # as it was sent
    assert api.get(f"/policies/{uri}").json()["tags"] == ["a", "b"]
    assert api.delete(f"/policy/{uri}").json() == {"success": True, "data": {"deleted": uri}}
    gone = api.get(f"/policy/{uri}")
    assert gone.status_code == 404 and gone.json()["success"] is False


# -- metrics ----------------------------------------------------------------------------
def test_metrics_count_decisions(api: httpx.Client, unique_name: str) -> None:
    uri = published(api, unique_name, code=eval_body("raise ValueError('x')"))
    api.post(f"/policies/{uri}/eval", json={})
    text = api.get("/metrics").text
    assert 'aios_policy_decisions_total{outcome="PolicyError"}' in text
    assert "aios_policy_decision_duration_seconds_bucket" in text
    assert "aios_sandbox_worker_restarts_total" in text
