"""The decision log: every pre-check decision, in a capped collection."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import CollectionInvalid

COLLECTION = "decisions"
CAPPED_BYTES = 64 * 1024 * 1024
CAPPED_DOCUMENTS = 100_000


class DecisionLog:
    """Append decisions; read the latest ones back."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self.collection: Collection = db[COLLECTION]

    def ensure_collection(self) -> None:
        try:
            self._db.create_collection(
                COLLECTION, capped=True, size=CAPPED_BYTES, max=CAPPED_DOCUMENTS
            )
        except CollectionInvalid:
            pass  # exists already

    def record(
        self, *, cluster_id: str, action: str, policy_rule_uri: str, allowed: bool,
        enforcement: str, duration_ms: float, input_data: Any, reason: str = "",
        keep_input: bool = False,
    ) -> dict:
        entry = {
            "time": datetime.now(UTC).isoformat(),
            "cluster_id": cluster_id,
            "action": action,
            "policy_rule_uri": policy_rule_uri,
            "allowed": allowed,
            "enforcement": enforcement,
            "reason": reason,
            "duration_ms": round(duration_ms, 3),
            "input_sha256": hashlib.sha256(
                json.dumps(input_data, sort_keys=True, default=str).encode()
            ).hexdigest(),
        }
        if keep_input:
            entry["input_data"] = input_data
        self.collection.insert_one(dict(entry))
        return entry

    def latest(self, *, cluster_id: str | None, action: str | None, limit: int) -> list[dict]:
        query = {k: v for k, v in (("cluster_id", cluster_id), ("action", action)) if v}
        # ObjectIds grow with insertion order ($natural order is not honoured everywhere).
        cursor = self.collection.find(query, {"_id": 0}).sort("_id", DESCENDING).limit(limit)
        return list(cursor)
