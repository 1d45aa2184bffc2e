"""A client's cluster query cannot stall the database for everyone else.

``$regex`` patterns are accepted only if the database's backtracking engine runs them in
linear time (clusters/safe_regex.py); every query carries a server-side time limit
(maxTimeMS) and one that runs past it answers 504, never a 503 for everyone.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import RuntimeServer, seed_cluster

from policy_runtime.clusters.safe_regex import UnsafeRegex, check_regex
from policy_runtime.embedded_db import EmbeddedDatabase

# (filter, the field the refusal must name)
HOSTILE = [
    # the issue's query: exponential on "aaaa...a!"
    ({"tags": {"$regex": "^(a+)+$"}}, "tags"),
    # nested and repeated groups
    ({"tags": {"$regex": "(a*)*b"}}, "tags"),
    ({"tags": {"$regex": "^(a|aa)+$"}}, "tags"),
    ({"tags": {"$regex": "(.*a){12}"}}, "tags"),
    ({"tags": {"$regex": "^(?:a+)+$"}}, "tags"),
    ({"tags": {"$regex": "^(a?){25}a{25}$"}}, "tags"),
    ({"tags": {"$regex": "^(ab?)?$"}}, "tags"),
    # overlapping alternation, repeated or chained
    ({"tags": {"$regex": "(a|a)*"}}, "tags"),
    ({"tags": {"$regex": "(a|a)(a|a)(a|a)(a|a)(a|a)(a|a)b"}}, "tags"),
    # polynomial: repeats that can end at several places, or unanchored repeats
    ({"tags": {"$regex": "^a*a*a*a*x"}}, "tags"),
    ({"tags": {"$regex": "^.*a.*b.*c$"}}, "tags"),
    ({"tags": {"$regex": ".*gpu.*"}}, "tags"),
    ({"tags": {"$regex": "a+x"}}, "tags"),
    ({"tags": {"$regex": "^a.*", "$options": "m"}}, "tags"),
    ({"tags": {"$regex": "^a{0,100}a{0,100}x"}}, "tags"),
    # backreferences, lookarounds and other extensions
    ({"tags": {"$regex": r"(a)\1"}}, "tags"),
    ({"tags": {"$regex": r"(?P<x>a)(?P=x)"}}, "tags"),
    ({"tags": {"$regex": r"\k<x>"}}, "tags"),
    ({"tags": {"$regex": "(?=a)a"}}, "tags"),
    ({"tags": {"$regex": "(?!a)b"}}, "tags"),
    ({"tags": {"$regex": "(?<=a)b"}}, "tags"),
    ({"tags": {"$regex": "(?<!a)b"}}, "tags"),
    ({"tags": {"$regex": "(?>a+)b"}}, "tags"),
    ({"tags": {"$regex": "a++b"}}, "tags"),
    ({"tags": {"$regex": "(?(1)a|b)"}}, "tags"),
    ({"tags": {"$regex": "(?i)gpu"}}, "tags"),
    ({"tags": {"$regex": r"\p{L}"}}, "tags"),
    ({"tags": {"$regex": "a{1000}"}}, "tags"),
    # size
    ({"tags": {"$regex": "a" * 257}}, "tags"),
    ({"tags": {"$regex": "[" + "a" * 5000 + "]"}}, "tags"),
    # $options abuse
    ({"tags": {"$regex": "gpu", "$options": "x"}}, "tags"),
    ({"tags": {"$regex": "gpu", "$options": "u"}}, "tags"),
    ({"tags": {"$regex": "gpu", "$options": 1}}, "tags"),
    ({"tags": {"$regex": "gpu", "$options": "iiiiiiii"}}, "tags"),
    ({"tags": {"$options": "i"}}, "tags"),
    ({"tags": {"$regex": "gpu", "$options": ["i"]}}, "tags"),
    # hidden in other operators
    ({"tags": {"$not": {"$regex": "^(a+)+$"}}}, "tags"),
    ({"tags": {"$in": [{"$regex": "^(a+)+$"}]}}, "tags"),
    ({"tags": {"$nin": ["gpu", {"$regex": "(a|a)*"}]}}, "tags"),
    ({"tags": {"$all": [{"$regex": "(a+)+"}]}}, "tags"),
    ({"tags": {"$in": [{"$regex": "^gpu"}]}}, "tags"),
    ({"nodes.nodeData": {"$elemMatch": {"id": {"$regex": "^(a+)+$"}}}}, "nodes.nodeData"),
    ({"$or": [{"id": "x"}, {"regionId": {"$regex": "(a|a)*$"}}]}, "regionId"),
    ({"$and": [{"$nor": [{"status": {"$not": {"$regex": "(x+x+)+y"}}}]}]}, "status"),
    ({"query": {"tags": {"$regex": "^(a+)+$"}}}, "tags"),
    # BSON regular expressions and non-string patterns
    ({"tags": {"$regularExpression": {"pattern": "^(a+)+$", "options": ""}}}, "tags"),
    ({"tags": {"$regex": {"$regularExpression": {"pattern": "(a+)+", "options": ""}}}},
     "tags"),
    ({"tags": {"$regex": ["(a+)+"]}}, "tags"),
    ({"tags": {"$regex": None}}, "tags"),
    # too many patterns in one filter
    ({"$or": [{"tags": {"$regex": f"^gpu{i}"}} for i in range(9)]}, "$regex"),
]

BENIGN = [
    ("^{region}-1$", ""),
    ("^{region}-[12]$", ""),
    ("^{region}", ""),
    ("^{REGION}-3$", "i"),
    ("{region}-2", ""),
    ("^{region}-\\d+$", ""),
    ("^{region}-.*$", "s"),
    ("^(?:{region})-(1|3)$", ""),
    ("\\A{region}-[0-9]+\\Z", "m"),
    ("^{region}-3?$", ""),
]


@pytest.mark.parametrize(("body", "field"), HOSTILE, ids=[f"hostile-{i}" for i in
                                                          range(len(HOSTILE))])
def test_hostile_regex_is_refused_with_422_naming_the_field(
    api: httpx.Client, body: dict, field: str
) -> None:
    response = api.post("/clusters/query", json=body)
    assert response.status_code == 422, response.text
    assert field in response.json()["detail"], response.json()


@pytest.fixture(scope="module")
def region(api_module: httpx.Client) -> str:
    region = f"rx{secrets.token_hex(3)}"
    for number in (1, 2, 3):
        created = api_module.post("/clusters", json={**seed_cluster(f"{region}-{number}"),
                                                     "regionId": region})
        assert created.status_code == 201, created.text
    return region


@pytest.fixture(scope="module")
def api_module(server: RuntimeServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.mark.parametrize(("pattern", "options"), BENIGN)
def test_benign_regex_is_answered(
    api_module: httpx.Client, region: str, pattern: str, options: str
) -> None:
    pattern = pattern.format(region=region, REGION=region.upper())
    body = {"id": {"$regex": pattern, **({"$options": options} if options else {})}}
    response = api_module.post("/clusters/query", json=body)
    assert response.status_code == 200, response.text
    flags = re.IGNORECASE if "i" in options else 0
    expected = sorted(f"{region}-{n}" for n in (1, 2, 3)
                      if re.search(pattern.replace("\\Z", "$"), f"{region}-{n}", flags))
    assert expected, pattern
    assert sorted(c["id"] for c in response.json()) == expected


def test_regex_in_not_and_elem_match_still_work(api_module: httpx.Client, region: str) -> None:
    body = {"regionId": region, "id": {"$not": {"$regex": "-1$"}}}
    ids = sorted(c["id"] for c in api_module.post("/clusters/query", json=body).json())
    assert ids == [f"{region}-2", f"{region}-3"]
    body = {"regionId": region, "tags": {"$elemMatch": {"$regex": "^vis"}}}
    assert len(api_module.post("/clusters/query", json=body).json()) == 3


def test_the_checker_accepts_what_it_documents() -> None:
    for pattern in ("^[a-z]+-[0-9]+$", "^gpu-.*-a100$", "west", "^cluster\\.west\\d*$",
                    "^gpu(-a100)?$", "^(eu|us)-(west|east)-\\d+$", "[ab]{3}c"):
        check_regex(pattern)
    for pattern in ("^(a+)+$", "^a*a*x", ".*abc.*", "^[a-z]+[0-9]+$"):
        with pytest.raises(UnsafeRegex):
            check_regex(pattern)


# -- the database stays available -----------------------------------------------------------

# The costliest patterns the checker accepts, and values that make them work hardest:
# 16 overlapping ways at every position (unanchored), and 16 ways then a repeat that
# scans the whole value and backtracks over all of it (anchored).
WORST_ACCEPTED = [
    {"tags": {"$regex": "(a|a)(a|a)(a|a)(a|a)b", "$options": "i"}},
    {"tags": {"$regex": "^(a|a)(a|a)(a|a)(a|a).*b$", "$options": "i"}},
    {"tags": {"$regex": "[ab]{100}c"}},
]
LONG_VALUE = "a" * 200_000


def test_the_worst_accepted_query_does_not_stall_other_requests(
    api_module: httpx.Client, server: RuntimeServer
) -> None:
    heavy = [f"heavy-{secrets.token_hex(3)}-{n}" for n in range(3)]
    for cluster_id in heavy:
        created = api_module.post("/clusters", json={**seed_cluster(cluster_id),
                                                     "tags": [LONG_VALUE]})
        assert created.status_code == 201, created.text
    # the issue's value and query: refused before it reaches the database
    issue = api_module.post("/clusters", json={**seed_cluster(f"{heavy[0]}-issue"),
                                               "tags": ["a" * 28 + "!"]})
    assert issue.status_code == 201
    refused = api_module.post("/clusters/query", json={"tags": {"$regex": "^(a+)+$"}})
    assert refused.status_code == 422 and "tags" in refused.json()["detail"]

    stop = threading.Event()
    heavy_answers: list[int] = []

    def hammer() -> None:
        with server.client() as client:
            while not stop.is_set():
                for body in WORST_ACCEPTED:
                    heavy_answers.append(
                        client.post("/clusters/query", json={**body, "id": {"$in": heavy}},
                                    params={"fields": "id"}).status_code)

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    other: list[int] = []
    health: list[int] = []
    try:
        # A stalled database shows as a failed /healthz (the runtime pings it every 2 s)
        # or as a request that errors or times out; a generous timeout, as a client has.
        with httpx.Client(base_url=server.url, timeout=10,
                          headers={"Authorization": f"Bearer {server.token}"}) as probe:
            while len(heavy_answers) < 12:
                health.append(probe.get("/healthz").status_code)
                other.append(probe.get(f"/clusters/{heavy[0]}-issue").status_code)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(health) == {200}, health
    assert set(other) == {200}, other
    assert set(heavy_answers) <= {200, 504}, heavy_answers
    assert 200 in heavy_answers


def test_a_query_past_its_time_limit_answers_504_and_others_keep_answering(
    embedded_db: EmbeddedDatabase, tmp_path: Path
) -> None:
    server = RuntimeServer(embedded_db.uri, secrets.token_urlsafe(16), tmp_path / "log",
                           AIOS_DB_NAME="aios_query_limit", AIOS_POOL_SIZE="1",
                           AIOS_QUERY_TIMEOUT_SECONDS="0.2").start()
    try:
        with server.client() as api:
            slow = [f"slow-{n}" for n in range(30)]
            for cluster_id in slow:
                assert api.post("/clusters", json={**seed_cluster(cluster_id),
                                                   "tags": [LONG_VALUE]}).status_code == 201
            body = {"tags": {"$regex": "^(a|a)(a|a)(a|a)(a|a).*b$", "$options": "i"}}
            stopped = api.post("/clusters/query", json=body)
            assert stopped.status_code == 504, stopped.text
            assert "limit of 0.2 s" in stopped.json()["detail"]
            assert api.get("/healthz").status_code == 200
            assert api.get("/clusters/slow-1").status_code == 200
            fast = api.post("/clusters/query", json={"id": "slow-2"}, params={"fields": "id"})
            assert fast.status_code == 200 and fast.json() == [{"id": "slow-2"}]
    finally:
        server.stop()


def test_a_query_the_database_refuses_is_a_client_error(api: httpx.Client) -> None:
    # valid for the allow-list, refused by the database: the client's fault, not a 503
    response = api.post("/clusters/query", json={"$regex": "^gpu"})
    assert response.status_code in (400, 422), response.text
    assert "database is unavailable" not in response.text
