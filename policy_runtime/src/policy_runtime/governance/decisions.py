"""The decision log: every pre-check decision, the newest ``max_entries`` kept."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import secrets
import threading
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.collection import Collection
from pymongo.database import Database

from policy_runtime.auth.principal import current_token_name

COLLECTION = "decisions"
DEFAULT_MAX_ENTRIES = 100_000
# Trimming scans the log, so it runs once per this many decisions, off the request path.
TRIM_EVERY = 1000

log = logging.getLogger(__name__)


MAX_SUMMARY_NAMES = 20


def _names(values: Any) -> list[str]:
    names = sorted(str(v)[:100] for v in values)
    return names[:MAX_SUMMARY_NAMES] + ([f"... {len(names) - MAX_SUMMARY_NAMES} more"]
                                        if len(names) > MAX_SUMMARY_NAMES else [])


def summarize(action: str, input_data: Any) -> dict[str, Any]:
    """What a decision was about, short and without values that may be sensitive: ids
    and field names, never field values (the full input is kept only with the policy's
    ``log_input`` setting)."""
    if not isinstance(input_data, dict):
        return {"input_type": type(input_data).__name__}
    summary: dict[str, Any] = {}
    node = input_data.get("node")
    if isinstance(node, dict) and isinstance(node.get("id"), str):
        summary["node_id"] = node["id"][:200]
    if isinstance(input_data.get("node_id"), str):
        summary["node_id"] = input_data["node_id"][:200]
    update = input_data.get("update")
    if isinstance(update, dict):
        summary["changed_fields"] = _names(update)
    cluster = input_data.get("cluster")
    if action == "add_cluster" and isinstance(cluster, dict):
        summary["new_cluster_id"] = str(cluster.get("id", ""))[:200]
    if not summary:
        summary["input_keys"] = _names(input_data)
    return summary


class DecisionLog:
    """Append decisions; read the latest ones back; keep the newest ``max_entries``.

    A plain collection trimmed by the runtime rather than a capped collection: the embedded
    database rewrites a capped collection on every insert (11 ms per decision after 2,500
    of them, growing linearly), while a plain insert stays flat. A capped collection made
    by an earlier release is kept, and left to the server to bound.
    """

    def __init__(self, db: Database, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._db = db
        self.collection: Collection = db[COLLECTION]
        self.max_entries = max_entries
        self._capped = False
        self._inserted = itertools.count(1)  # next() is atomic under the GIL
        self._trimming = threading.Lock()

    def ensure_collection(self) -> None:
        self._capped = bool(self.collection.options().get("capped"))
        self.collection.create_index([("cluster_id", ASCENDING), ("action", ASCENDING)])
        self.trim()

    def trim(self) -> int:
        """Delete all but the newest ``max_entries`` decisions; returns how many went."""
        if self._capped or not self._trimming.acquire(blocking=False):
            return 0
        try:
            oldest_kept = list(self.collection.find({}, {"_id": 1}).sort("_id", DESCENDING)
                               .skip(self.max_entries - 1).limit(1))
            if not oldest_kept:
                return 0
            older = {"_id": {"$lt": oldest_kept[0]["_id"]}}
            return self.collection.delete_many(older).deleted_count
        finally:
            self._trimming.release()

    def _trim_in_background(self) -> None:
        def run() -> None:
            try:
                self.trim()
            except Exception:  # the next round retries; a decision never fails for this
                log.warning("trimming the decision log failed", exc_info=True)

        threading.Thread(target=run, name="decision-log-trim", daemon=True).start()

    def record(
        self, *, cluster_id: str, action: str, policy_rule_uri: str, allowed: bool,
        enforcement: str, duration_ms: float, input_data: Any, reason: str = "",
        keep_input: bool = False, code_sha256: str = "", dry_check: bool = False,
    ) -> dict:
        """One decision: ``code_sha256`` is the code that ran ("" when no policy did);
        ``dry_check`` marks an evaluation that applied nothing (``POST /pre-check``).
        ``token`` is the name of the API token whose request made it ("" when the runtime
        decided by itself, e.g. the stability checker); never the token's secret."""
        entry = {
            "decision_id": secrets.token_hex(12),
            "time": datetime.now(UTC).isoformat(),
            "cluster_id": cluster_id,
            "action": action,
            "policy_rule_uri": policy_rule_uri,
            "code_sha256": code_sha256,
            "allowed": allowed,
            "enforcement": enforcement,
            "reason": reason,
            "dry_check": dry_check,
            "token": current_token_name.get(),
            "duration_ms": round(duration_ms, 3),
            "input_sha256": hashlib.sha256(
                json.dumps(input_data, sort_keys=True, default=str).encode()
            ).hexdigest(),
            "summary": summarize(action, input_data),
        }
        if keep_input:
            entry["input_data"] = input_data
        return self._insert(entry)

    def record_event(self, *, cluster_id: str, action: str, event: str, **details: Any) -> dict:
        """Something that changed what decisions run, e.g. a forced policy deletion."""
        entry = {"time": datetime.now(UTC).isoformat(), "cluster_id": cluster_id,
                 "action": action, "event": event, "token": current_token_name.get(),
                 **details}
        return self._insert(entry)

    def _insert(self, entry: dict) -> dict:
        self.collection.insert_one(dict(entry))
        if next(self._inserted) % TRIM_EVERY == 0:
            self._trim_in_background()
        return entry

    def latest(
        self, *, cluster_id: str | None, action: str | None, limit: int,
        cluster_ids: list[str] | None = None,
    ) -> list[dict]:
        """The newest first; ``cluster_ids`` limits them to those clusters (a token's scope)."""
        query: dict[str, Any] = {
            k: v for k, v in (("cluster_id", cluster_id), ("action", action)) if v
        }
        if cluster_ids is not None and not cluster_id:
            query["cluster_id"] = {"$in": cluster_ids}
        # ObjectIds grow with insertion order ($natural order is not honoured everywhere).
        cursor = self.collection.find(query, {"_id": 0}).sort("_id", DESCENDING).limit(limit)
        return list(cursor)
