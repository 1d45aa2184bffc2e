"""The policies collection: published policy versions, immutable once stored.

A URI names one code for ever: deleting a policy leaves a tombstone under its URI (the
metadata, the code hash, when and whether it was forced), so the URI cannot be published
again, with other code or the same, and a map or decision log entry naming it can never
come to mean other code.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from policy_runtime.governance.actions import ACTIONS, names_of

COLLECTION = "policies"
CLUSTERS = "clusters"
GRAPHS = "graphs"  # graphs/store.py: upstream graphs whose nodes are policies
_SUMMARY = {"_id": 0, "code": 0}
_FULL = {"_id": 0}
# Published and not deleted: tombstones keep their URI but are no policy.
_LIVE = {"deleted": {"$ne": True}}


class PolicyConflict(Exception):
    """A different policy is already published under this URI."""


class PolicyReferenced(PolicyConflict):
    """The policy is what clusters' pre-check maps or stability checkers run, or a node of
    stored graphs."""

    def __init__(
        self, uri: str, references: list[dict[str, str]], graphs: list[str] | None = None
    ) -> None:
        uses = [f"{r['cluster_id']}: {r['action']}" for r in references]
        uses += [f"graph {graph}" for graph in graphs or []]
        where = ", ".join(uses[:20])
        more = f" and {len(uses) - 20} more" if len(uses) > 20 else ""
        super().__init__(
            f"{uri} is in use ({where}{more}); map those actions and graph nodes to another "
            "policy first, or delete with ?force=true (recorded in the decision log; the "
            "actions then deny and the graphs fail at that node, as their policy is no "
            "longer published)"
        )
        self.references = references
        self.graphs = graphs or []


class PolicyStore:
    """CRUD on published policies, keyed by ``policy_rule_uri``."""

    def __init__(self, db: Database) -> None:
        self.db = db
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
            existing = self.collection.find_one(
                {"policy_rule_uri": document["policy_rule_uri"]}, _FULL
            )
            if existing is not None and existing.get("deleted"):
                raise PolicyConflict(
                    f"{document['policy_rule_uri']} was published and deleted "
                    f"({existing.get('deleted_at', '')}); a published URI is never reused, "
                    "publish a new version instead"
                ) from None
            if existing is not None and existing["code_sha256"] == document["code_sha256"]:
                return existing, False
            raise PolicyConflict(
                f"{document['policy_rule_uri']} is already published with different code; "
                "published versions are immutable, publish a new version instead"
            ) from None
        return document, True

    def get(self, uri: str) -> dict[str, Any] | None:
        return self.collection.find_one({"policy_rule_uri": uri, **_LIVE}, _FULL)

    def taken(self, uri: str) -> bool:
        """Whether ``uri`` was ever published (a deleted policy's URI stays taken)."""
        return self.collection.find_one({"policy_rule_uri": uri}, {"_id": 1}) is not None

    def query(
        self, filter_: dict[str, Any], *, skip: int = 0, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Published policies matching a client's MongoDB filter, by URI.

        The filter must have passed ``clusters.operators.check_filter``; deleted
        policies never match. Run it within ``pymongo.timeout`` to bound it."""
        live: dict[str, Any] = dict(_LIVE)
        query = {"$and": [filter_, live]} if filter_ else live
        cursor = (
            self.collection.find(query, _FULL)
            .sort("policy_rule_uri", ASCENDING)
            .skip(skip)
            .limit(limit)
        )
        return list(cursor)

    def update_fields(self, uri: str, fields: dict[str, Any]) -> bool:
        """Set descriptive fields of a published policy (never its code); False if none."""
        fields = {**fields, "updated_at": datetime.now(UTC).isoformat()}
        result = self.collection.update_one({"policy_rule_uri": uri, **_LIVE}, {"$set": fields})
        return result.matched_count == 1

    def releases(self, name: str, version: str, limit: int = 10) -> list[str]:
        """The URIs published under ``name`` and ``version``, whatever their release tag."""
        cursor = self.collection.find(
            {"name": name, "version": version, **_LIVE}, {"policy_rule_uri": 1, "_id": 0}
        ).sort("policy_rule_uri", ASCENDING).limit(limit)
        return [str(d.get("policy_rule_uri", "")) for d in cursor]

    def list(
        self, *, name: str | None = None, tag: str | None = None, skip: int = 0, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of summaries (without code), newest URIs last, and the total count."""
        query: dict[str, Any] = dict(_LIVE)
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

    def references(self, uri: str) -> list[dict[str, str]]:
        """The clusters (of this database) whose pre-check map or stability checker runs
        ``uri``: ``[{"cluster_id", "action"}]``, the action being ``stability_checker``
        for the latter."""
        keys = [key for action in ACTIONS for key in names_of(action)]
        clauses: list[dict[str, Any]] = [{"config.stabilityChecker.policyRuleURI": uri}]
        for key in keys:
            clauses.append({f"config.actionsPolicyMap.{key}": uri})
            clauses.append({f"config.actionsPolicyMap.{key}.policyRuleURI": uri})
        found = []
        projection = {"_id": 0, "id": 1, "config.actionsPolicyMap": 1,
                      "config.stabilityChecker": 1}
        for cluster in self.db[CLUSTERS].find({"$or": clauses}, projection).sort("id", ASCENDING):
            config = cluster.get("config") or {}
            mapping = config.get("actionsPolicyMap") or {}
            for key in keys:
                entry = mapping.get(key) if isinstance(mapping, dict) else None
                if entry == uri or (isinstance(entry, dict) and entry.get("policyRuleURI") == uri):
                    found.append({"cluster_id": cluster["id"], "action": key})
            checker = config.get("stabilityChecker")
            if isinstance(checker, dict) and checker.get("policyRuleURI") == uri:
                found.append({"cluster_id": cluster["id"], "action": "stability_checker"})
        return found

    def graph_references(self, uri: str) -> list[str]:
        """The URIs of the stored graphs that have ``uri`` as a node (at most 21: enough to
        name them in a refusal)."""
        found = self.db[GRAPHS].find({"graph_function_ids": uri}, {"_id": 0, "graph_uri": 1})
        return [graph["graph_uri"] for graph in found.sort("graph_uri", ASCENDING).limit(21)]

    def delete(self, uri: str, *, force: bool = False,
               references: list[dict[str, str]] | None = None) -> bool:
        """Leave a tombstone for the published policy; False when there is none."""
        tombstone = {"deleted": True, "deleted_at": datetime.now(UTC).isoformat(),
                     "deleted_with_force": force, "deleted_references": references or []}
        result = self.collection.update_one({"policy_rule_uri": uri, **_LIVE},
                                            {"$set": tombstone, "$unset": {"code": ""}})
        return result.modified_count == 1
