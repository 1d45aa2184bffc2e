"""The decision log keeps the newest entries, on the real MongoDB-wire-protocol database."""

from __future__ import annotations

import secrets
import time

from pymongo import MongoClient

from policy_runtime.embedded_db import EmbeddedDatabase
from policy_runtime.governance import decisions
from policy_runtime.governance.decisions import DecisionLog


def record(log: DecisionLog, number: int, cluster_id: str = "c1") -> None:
    log.record(cluster_id=cluster_id, action="update_cluster", policy_rule_uri="p:v1",
               allowed=bool(number % 2), enforcement="enforce", duration_ms=1.0,
               input_data={"n": number})


def fresh_log(embedded_db: EmbeddedDatabase, max_entries: int) -> tuple[MongoClient, DecisionLog]:
    client = MongoClient(embedded_db.uri)
    log = DecisionLog(client[f"log_{secrets.token_hex(4)}"], max_entries)
    log.ensure_collection()
    return client, log


def test_trim_keeps_the_newest_entries(embedded_db: EmbeddedDatabase) -> None:
    client, log = fresh_log(embedded_db, max_entries=5)
    try:
        for number in range(12):
            record(log, number)
        assert log.trim() == 7
        kept = log.latest(cluster_id="c1", action="update_cluster", limit=100)
        assert [entry["allowed"] for entry in kept] == [True, False, True, False, True]
        assert log.trim() == 0, "nothing more to trim"
        assert not log.collection.options().get("capped"), "a plain collection, not capped"
    finally:
        client.close()


def test_trimming_runs_by_itself_every_so_many_decisions(
    embedded_db: EmbeddedDatabase, monkeypatch
) -> None:
    monkeypatch.setattr(decisions, "TRIM_EVERY", 10)
    client, log = fresh_log(embedded_db, max_entries=4)
    try:
        for number in range(10):
            record(log, number, cluster_id=f"c{number}")
        deadline = time.monotonic() + 10
        while log.collection.count_documents({}) > 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(e["cluster_id"] for e in log.collection.find()) == ["c6", "c7", "c8", "c9"]
    finally:
        client.close()


def test_a_capped_log_of_an_earlier_release_is_left_to_the_server(
    embedded_db: EmbeddedDatabase,
) -> None:
    client = MongoClient(embedded_db.uri)
    db = client[f"log_{secrets.token_hex(4)}"]
    db.create_collection(decisions.COLLECTION, capped=True, size=1 << 20)
    log = DecisionLog(db, max_entries=2)
    try:
        log.ensure_collection()
        for number in range(5):
            record(log, number)
        assert log.trim() == 0
        assert log.collection.count_documents({}) == 5
    finally:
        client.close()
