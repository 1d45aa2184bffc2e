"""The pod-uid <-> job-id mapping and the cancels still owed to DMS, in SQLite, so that a
restart loses no job.

Every change is committed before the plugin answers (WAL journal, synchronous=FULL):
once interLink hears of a job id, the mapping is on disk. A pod is recorded ``creating``
before its job is posted, so a status check during a slow post reads "being created";
a delete that DMS could not carry out is kept as a pending cancel until DMS confirms it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CREATING, CREATED, DELETED = "creating", "created", "deleted"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    pod_uid    TEXT PRIMARY KEY,
    namespace  TEXT NOT NULL,
    pod_name   TEXT NOT NULL,
    job_id     TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pending_cancels (
    job_id       TEXT PRIMARY KEY,
    pod_uid      TEXT NOT NULL,
    namespace    TEXT NOT NULL,
    pod_name     TEXT NOT NULL,
    requested_at REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS advertised (
    resource TEXT PRIMARY KEY
);
"""
SELECT_MAPPING = ("SELECT pod_uid, namespace, pod_name, job_id, created_at, state FROM jobs "
                  "WHERE pod_uid = ?")


@dataclass(frozen=True)
class Mapping:
    pod_uid: str
    namespace: str
    pod_name: str
    job_id: str  # "" while the job is being posted
    created_at: float
    state: str = CREATED


@dataclass(frozen=True)
class PendingCancel:
    job_id: str
    pod_uid: str
    namespace: str
    pod_name: str
    requested_at: float
    attempts: int
    last_error: str


class JobStore:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()  # one connection, used by the server's threads in turn
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            if "state" not in columns:  # a mapping written before pods had a state
                self._db.execute("ALTER TABLE jobs ADD COLUMN state TEXT NOT NULL "
                                 "DEFAULT 'created'")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, pod_uid: str) -> Mapping | None:
        with self._lock:
            row = self._db.execute(SELECT_MAPPING, (pod_uid,)).fetchone()
        return Mapping(*row) if row else None

    def put(self, pod_uid: str, namespace: str, pod_name: str, job_id: str,
            state: str = CREATED) -> Mapping:
        mapping = Mapping(pod_uid, namespace, pod_name, job_id, time.time(), state)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO jobs (pod_uid, namespace, pod_name, job_id, "
                             "created_at, state) VALUES (?, ?, ?, ?, ?, ?)",
                             (mapping.pod_uid, mapping.namespace, mapping.pod_name,
                              mapping.job_id, mapping.created_at, mapping.state))
        return mapping

    def begin_create(self, pod_uid: str, namespace: str, pod_name: str) -> bool:
        """Record the pod ``creating``; False if it is already there (being created or
        created), so that a concurrent or repeated create posts no second job."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO jobs (pod_uid, namespace, pod_name, job_id, created_at, "
                "state) VALUES (?, ?, ?, '', ?, ?)",
                (pod_uid, namespace, pod_name, time.time(), CREATING))
        return cursor.rowcount > 0

    def finish_create(self, pod_uid: str, job_id: str) -> bool:
        """The job of a ``creating`` pod was posted: record it. False if the pod was deleted
        while its job was being posted; the job is then queued for cancelling instead."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(SELECT_MAPPING, (pod_uid,)).fetchone()
            if row is not None and Mapping(*row).state != DELETED:
                self._db.execute("UPDATE jobs SET job_id = ?, state = ? WHERE pod_uid = ?",
                                 (job_id, CREATED, pod_uid))
                return True
            namespace, name = (row[1], row[2]) if row else ("", "")
            self._queue_cancel(job_id, pod_uid, namespace, name)
            self._db.execute("DELETE FROM jobs WHERE pod_uid = ?", (pod_uid,))
            return False

    def abandon_create(self, pod_uid: str) -> None:
        """Posting the job failed: forget the pod (interLink may create it again)."""
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE pod_uid = ? AND job_id = ''", (pod_uid,))

    def remove(self, pod_uid: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM jobs WHERE pod_uid = ?", (pod_uid,))
        return cursor.rowcount > 0

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]

    # -- deletes DMS has not confirmed yet --------------------------------------------------
    def delete(self, pod_uid: str) -> Mapping | None:
        """Move the pod's job to the pending cancels in one transaction, and forget the pod.
        A pod still being created is marked deleted; its job is queued once it is posted."""
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(SELECT_MAPPING, (pod_uid,)).fetchone()
            if row is None:
                return None
            mapping = Mapping(*row)
            if not mapping.job_id:
                self._db.execute("UPDATE jobs SET state = ? WHERE pod_uid = ?",
                                 (DELETED, pod_uid))
                return mapping
            self._queue_cancel(mapping.job_id, pod_uid, mapping.namespace, mapping.pod_name)
            self._db.execute("DELETE FROM jobs WHERE pod_uid = ?", (pod_uid,))
            return mapping

    def _queue_cancel(self, job_id: str, pod_uid: str, namespace: str, name: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO pending_cancels (job_id, pod_uid, namespace, "
                         "pod_name, requested_at) VALUES (?, ?, ?, ?, ?)",
                         (job_id, pod_uid, namespace, name, time.time()))

    def pending_cancels(self) -> list[PendingCancel]:
        with self._lock:
            rows = self._db.execute("SELECT job_id, pod_uid, namespace, pod_name, requested_at, "
                                    "attempts, last_error FROM pending_cancels "
                                    "ORDER BY requested_at").fetchall()
        return [PendingCancel(*row) for row in rows]

    def cancel_failed(self, job_id: str, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE pending_cancels SET attempts = attempts + 1, "
                             "last_error = ? WHERE job_id = ?", (error[:500], job_id))

    def cancel_done(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM pending_cancels WHERE job_id = ?", (job_id,))

    def pending_cancel_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM pending_cancels").fetchone()[0]

    # -- extended resources the node was told of -------------------------------------------
    def advertised(self) -> set[str]:
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT resource FROM advertised")}

    def remember_advertised(self, names: set[str]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO advertised (resource) VALUES (?)",
                                 [(name,) for name in sorted(names)])
