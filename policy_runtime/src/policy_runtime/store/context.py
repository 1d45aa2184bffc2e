"""The ``policy_context`` collection: the ``context`` dict each policy keeps between
decisions, one per policy URI and cluster id.

A document holds the context as JSON text (any JSON keys, exactly as the policy left
them, and an exact size to check against the limit) and a ``version`` that every store
increments. Stores are compare-and-set on that version: of two decisions that read the
same version, only the first one's store succeeds; the other is told so
(:class:`ContextConflict`) and the evaluator runs that decision again on the newer
context. No update is ever lost, and a decision that fails stores nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from policy_runtime.errors import InvalidOutput

COLLECTION = "policy_context"
DEFAULT_MAX_BYTES = 64 * 1024
MAX_BYTES_SETTING = "AIOS_POLICY_CONTEXT_MAX_BYTES"


class ContextConflict(Exception):
    """Another decision stored the context since this one read it."""


@dataclass(frozen=True)
class ContextSlot:
    """A policy's stored context as one decision read it."""

    key: str
    policy_rule_uri: str
    cluster_id: str
    state: dict
    text: str  # the stored JSON ("{}" when nothing is stored yet)
    version: int  # 0: no document yet


def context_key(policy_rule_uri: str, cluster_id: str | None) -> str:
    """The document id of a policy's context on a cluster ("" for none)."""
    return json.dumps([policy_rule_uri, cluster_id or ""], ensure_ascii=False)


def encode_state(state: Any) -> str:
    # Sorted keys: the same context always has the same text, so an unchanged context is
    # recognised and not written again.
    return json.dumps(
        state, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    )


class ContextStore:
    """Loads and compare-and-set stores of policy contexts."""

    def __init__(self, db: Database, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.collection: Collection = db[COLLECTION]
        self.max_bytes = max_bytes

    def load(self, policy_rule_uri: str, cluster_id: str | None) -> ContextSlot:
        key = context_key(policy_rule_uri, cluster_id)
        document = self.collection.find_one({"_id": key})
        if document is None:
            return ContextSlot(key, policy_rule_uri, cluster_id or "", {}, "{}", 0)
        text = str(document.get("state") or "{}")
        state = json.loads(text)
        if not isinstance(state, dict):
            state = {}
        return ContextSlot(
            key, policy_rule_uri, cluster_id or "", state, text, int(document["version"])
        )

    def check_size(self, text: str) -> None:
        """InvalidOutput when the context's JSON exceeds the limit."""
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.max_bytes:
            raise InvalidOutput(
                f"the policy's context is {size} bytes of JSON, over the limit of "
                f"{self.max_bytes} bytes ({MAX_BYTES_SETTING}); nothing was stored"
            )

    def store(self, slot: ContextSlot, state: dict) -> bool:
        """Store ``state`` if no other decision stored since ``slot`` was read.

        False when nothing needed storing (the context is unchanged); raises
        InvalidOutput above the size limit and ContextConflict when another decision
        stored first.
        """
        try:
            text = encode_state(state)
        except ValueError as exc:  # NaN or infinity
            raise InvalidOutput(f"the policy's context is not JSON: {exc}") from None
        if text == slot.text:
            return False
        self.check_size(text)
        now = datetime.now(UTC)
        if slot.version == 0:
            try:
                self.collection.insert_one(
                    {
                        "_id": slot.key,
                        "policy_rule_uri": slot.policy_rule_uri,
                        "cluster_id": slot.cluster_id,
                        "state": text,
                        "version": 1,
                        "updated": now,
                    }
                )
            except DuplicateKeyError:
                raise ContextConflict(slot.key) from None
            return True
        updated = self.collection.update_one(
            {"_id": slot.key, "version": slot.version},
            {"$set": {"state": text, "version": slot.version + 1, "updated": now}},
        )
        if updated.matched_count != 1:
            raise ContextConflict(slot.key)
        return True

    def get(self, policy_rule_uri: str, cluster_id: str | None = None) -> dict:
        """The stored context (``{}`` when there is none)."""
        return self.load(policy_rule_uri, cluster_id).state
