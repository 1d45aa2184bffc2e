"""The audit log: which token (by name, never its secret) made every write."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pymongo import DESCENDING
from pymongo.database import Database

COLLECTION = "audit"
log = logging.getLogger(__name__)


class AuditLog:
    def __init__(self, db: Database) -> None:
        self.collection = db[COLLECTION]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("token", DESCENDING)])

    def record(
        self, *, token: str, role: str, permission: str, method: str, path: str, status: int
    ) -> None:
        entry = {"time": datetime.now(UTC).isoformat(), "token": token, "role": role,
                 "permission": permission, "method": method, "path": path, "status": status}
        try:
            self.collection.insert_one(entry)
        except Exception:  # the write itself succeeded; say so loudly, never fail it
            log.error("audit record failed for %s %s by token %r", method, path, token,
                      exc_info=True)

    def latest(self, *, token: str | None = None, limit: int = 100) -> list[dict]:
        query = {"token": token} if token else {}
        cursor = self.collection.find(query, {"_id": 0}).sort("_id", DESCENDING).limit(limit)
        return list(cursor)
