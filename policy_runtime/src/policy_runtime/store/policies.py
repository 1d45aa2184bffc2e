"""The policies collection: published policy versions, immutable once stored."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

COLLECTION = "policies"
_SUMMARY = {"_id": 0, "code": 0}
_FULL = {"_id": 0}


class PolicyConflict(Exception):
    """A different policy is already published under this URI."""


class PolicyStore:
    """CRUD on published policies, keyed by ``policy_rule_uri``."""

    def __init__(self, db: Database) -> None:
        self.collection: Collection = db[COLLECTION]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("policy_rule_uri", ASCENDING)], unique=True)
        self.collection.create_index([("name", ASCENDING)])
        self.collection.create_index([("tags", ASCENDING)])

    def publish(self, document: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store a new version; ``(stored, created)``. Same code again is not a change."""
        document = {
            **document,
            "code_sha256": hashlib.sha256(document["code"].encode()).hexdigest(),
            "created_at": datetime.now(UTC).isoformat(),
        }
        try:
            self.collection.insert_one(dict(document))
        except DuplicateKeyError:
            existing = self.get(document["policy_rule_uri"])
            if existing is not None and existing["code_sha256"] == document["code_sha256"]:
                return existing, False
            raise PolicyConflict(
                f"{document['policy_rule_uri']} is already published with different code; "
                "published versions are immutable, publish a new version instead"
            ) from None
        return document, True

    def get(self, uri: str) -> dict[str, Any] | None:
        return self.collection.find_one({"policy_rule_uri": uri}, _FULL)

    def list(
        self, *, name: str | None = None, tag: str | None = None, skip: int = 0, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of summaries (without code), newest URIs last, and the total count."""
        query: dict[str, Any] = {}
        if name:
            # literal prefix match: user text is escaped, never interpreted as a regex
            query["name"] = {"$regex": "^" + re.escape(name)}
        if tag:
            query["tags"] = tag
        total = self.collection.count_documents(query)
        cursor = (
            self.collection.find(query, _SUMMARY)
            .sort("policy_rule_uri", ASCENDING)
            .skip(skip)
            .limit(limit)
        )
        return list(cursor), total

    def delete(self, uri: str) -> bool:
        return self.collection.delete_one({"policy_rule_uri": uri}).deleted_count == 1
