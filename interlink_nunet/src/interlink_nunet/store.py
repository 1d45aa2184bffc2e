"""The pod-uid <-> job-id mapping, in SQLite, so that a restart loses no job.

Every change is committed before the plugin answers (WAL journal, synchronous=FULL):
once interLink hears of a job id, the mapping is on disk.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    pod_uid    TEXT PRIMARY KEY,
    namespace  TEXT NOT NULL,
    pod_name   TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Mapping:
    pod_uid: str
    namespace: str
    pod_name: str
    job_id: str
    created_at: float


class JobStore:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()  # one connection, used by the server's threads in turn
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, pod_uid: str) -> Mapping | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE pod_uid = ?", (pod_uid,)).fetchone()
        return Mapping(*row) if row else None

    def put(self, pod_uid: str, namespace: str, pod_name: str, job_id: str) -> Mapping:
        mapping = Mapping(pod_uid, namespace, pod_name, job_id, time.time())
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?)",
                             (mapping.pod_uid, mapping.namespace, mapping.pod_name,
                              mapping.job_id, mapping.created_at))
        return mapping

    def remove(self, pod_uid: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM jobs WHERE pod_uid = ?", (pod_uid,))
        return cursor.rowcount > 0

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
