"""The graphs collection: upstream graph records, keyed by ``graph_uri``.

Unlike a policy version a graph is no published code: upstream's ``PUT /graphs/<uri>``
replaces it, and so does this store. Each of its nodes must name a policy published when
the graph is stored; deleting such a policy is refused while a graph has it as a node,
unless forced: the graph stays, and running it then names the missing policy
(execution.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

COLLECTION = "graphs"
_VIEW = {"_id": 0}
# What a stored graph holds that its record does not: not compared, not replaced.
_STAMPS = ("created_at", "updated_at")


def _content(document: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in document.items() if k not in (*_STAMPS, "_id")}


class GraphStore:
    """CRUD and queries on graph records (as record.to_document() builds them)."""

    def __init__(self, db: Database) -> None:
        self.collection: Collection = db[COLLECTION]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("graph_uri", ASCENDING)], unique=True)
        self.collection.create_index([("graph_name", ASCENDING)])

    def create(self, document: dict[str, Any]) -> tuple[dict[str, Any], bool] | None:
        """Store a new graph: ``(stored, True)``; the same record again ``(stored, False)``;
        None when another graph holds the URI."""
        stamped = {**document, "created_at": datetime.now(UTC).isoformat()}
        try:
            self.collection.insert_one(dict(stamped))
        except DuplicateKeyError:
            existing = self.get(document["graph_uri"])
            if existing is not None and _content(existing) == _content(document):
                return existing, False
            return None
        return stamped, True

    def get(self, uri: str) -> dict[str, Any] | None:
        return self.collection.find_one({"graph_uri": uri}, _VIEW)

    def replace(self, uri: str, document: dict[str, Any]) -> bool:
        """Replace the graph stored under ``uri``; False when there is none."""
        existing = self.get(uri)
        if existing is None:
            return False
        replacement = {
            **document,
            "created_at": existing.get("created_at"),
            "updated_at": datetime.now(UTC).isoformat(),
        }
        return self.collection.replace_one({"graph_uri": uri}, replacement).matched_count == 1

    def delete(self, uri: str) -> bool:
        return self.collection.delete_one({"graph_uri": uri}).deleted_count == 1

    def query(
        self, filter_: dict[str, Any], *, skip: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Graphs matching a client's filter (checked against the query allow-list by
        the caller), by URI. Run it within ``pymongo.timeout`` to bound it."""
        cursor = (
            self.collection.find(filter_, _VIEW)
            .sort("graph_uri", ASCENDING)
            .skip(skip)
            .limit(limit)
        )
        return list(cursor)
