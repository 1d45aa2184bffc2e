"""Requests the database refuses are the client's mistake: a 400 naming it, never a
misleading 503 "database unavailable"; an unexpected failure is one log line with an id."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets

import httpx
import pytest
from conftest import RuntimeServer, seed_cluster

from policy_runtime.api.unexpected_errors import UnexpectedErrorMiddleware


@pytest.fixture(scope="module")
def cluster_id(server: RuntimeServer) -> str:
    identifier = f"badreq-{secrets.token_hex(4)}"
    with server.client() as api:
        assert api.post("/clusters", json=seed_cluster(identifier)).status_code == 201
    return identifier


@pytest.mark.parametrize(("body", "params", "needle"), [
    ({"tags": {"$size": -1}}, {}, "$size"),
    ({"$and": []}, {}, "$and"),
    ({}, {"fields": "nodes.$"}, "positional"),
])
def test_filters_the_database_refuses_are_400s(api: httpx.Client, cluster_id: str, body: dict,
                                               params: dict, needle: str) -> None:
    response = api.post("/clusters/query", json=body, params=params)
    assert response.status_code == 400, response.text
    detail = response.json()["detail"]
    assert "unavailable" not in detail and needle in detail
    assert api.get("/healthz").status_code == 200


def test_bad_requests_leave_one_short_line_in_the_log(api: httpx.Client, server: RuntimeServer,
                                                      cluster_id: str) -> None:
    before = server.log_path.stat().st_size
    long_filter = {"tags": {"$size": -2}, "status": "x" * 1000}
    for body in ({"tags": {"$size": -1}}, {"$and": []}, long_filter):
        assert api.post("/clusters/query", json=body).status_code == 400
    assert api.get(f"/clusters/{cluster_id}").status_code == 200
    grown = server.log_path.read_bytes()[before:]
    assert b"Traceback" not in grown
    assert len(grown) < 4096, grown[:2000]


async def _call(app, path: str = "/boom") -> tuple[int, bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app({"type": "http", "method": "POST", "path": path, "headers": []}, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_an_unexpected_failure_is_one_line_with_an_id(caplog: pytest.LogCaptureFixture) -> None:
    async def failing_app(scope, receive, send) -> None:
        payload = {"secret-ish": "x" * 100_000}
        raise RuntimeError(f"it broke on {json.dumps(payload)}")

    with caplog.at_level(logging.ERROR, logger="policy_runtime.api"):
        status, body = asyncio.run(_call(UnexpectedErrorMiddleware(failing_app)))
    assert status == 500
    error_id = json.loads(body)["detail"].split()[2].rstrip(":")
    (record,) = caplog.records
    assert record.error_id == error_id and record.error_type == "RuntimeError"
    assert record.path == "/boom" and "failing_app" in record.where
    assert len(record.error) <= 300 and record.exc_info is None
