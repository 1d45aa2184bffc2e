"""The mapping store: a database written before pods had a state still opens."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from interlink_nunet.store import CREATED, JobStore


def test_a_mapping_of_an_earlier_release_reads_as_created(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    with sqlite3.connect(path) as old:
        old.execute("CREATE TABLE jobs (pod_uid TEXT PRIMARY KEY, namespace TEXT NOT NULL, "
                    "pod_name TEXT NOT NULL, job_id TEXT NOT NULL, created_at REAL NOT NULL)")
        old.execute("INSERT INTO jobs VALUES ('u-1', 'default', 'p', 'job-1', 1.0)")
    old.close()
    store = JobStore(path)
    try:
        mapping = store.get("u-1")
        assert (mapping.job_id, mapping.state) == ("job-1", CREATED)
        assert store.delete("u-1").job_id == "job-1"
        assert [p.job_id for p in store.pending_cancels()] == ["job-1"]
    finally:
        store.close()
