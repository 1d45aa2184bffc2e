"""The clusters collection: documents validated by the model, updates without lost writes.

Updates use MongoDB's update syntax. To validate the result before anything is written,
the update is first applied to a scratch copy of the document; the stored document is
then replaced only if nobody changed it meanwhile (a revision number, compare-and-swap),
else the whole step is retried. A rejected update therefore never touches the document.

Within one replica, writers to the same cluster also take turns (a striped lock): a
governed update evaluates a policy between its read and its write, and ten concurrent
writers of one cluster otherwise lose the compare-and-swap to each other over and over,
each losing attempt costing a policy evaluation (seen as 20 s updates under load).
Compare-and-swap still guards against the other replicas.
"""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable

import bson
import pymongo
from pydantic import ValidationError
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure

from policy_runtime.clusters.document import ClusterDocument
from policy_runtime.clusters.operators import (
    OperatorError,
    check_document,
    check_filter,
    check_update,
)
from policy_runtime.clusters.query_limits import bounded
from policy_runtime.governance.actions import refuse_governance_changes

COLLECTION = "clusters"
SCRATCH = "clusters_scratch"
_REVISION = "_rev"
_HIDDEN = {"_id": 0, _REVISION: 0}
_CAS_ATTEMPTS = 20
# A scrape of /metrics counts the registry: never for longer than this.
_COUNT_TIMEOUT_SECONDS = 1.0
_CAS_MAX_PAUSE_SECONDS = 0.05
MAX_QUERY_LIMIT = 1000
# A cluster of 10,000 nodes takes about 5 MiB; every update rewrites the whole document,
# so one that grew without bound would slow every later update and query of it.
MAX_DOCUMENT_BYTES = 8 * 1024 * 1024
MAX_REPORTED_ERRORS = 20
_WRITER_LOCKS = [threading.Lock() for _ in range(64)]


def _writer_lock(cluster_id: str) -> threading.Lock:
    return _WRITER_LOCKS[zlib.crc32(cluster_id.encode()) % len(_WRITER_LOCKS)]


class ClusterNotFound(LookupError):
    """No cluster has this id."""


class ClusterConflict(Exception):
    """A cluster with this id exists already, or it kept changing under an update."""


class InvalidCluster(ValueError):
    """The document (or the result of an update) does not match the cluster model."""

    def __init__(self, message: str, errors: list | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


def validated(document: dict) -> dict:
    """The document as the model normalises it; InvalidCluster naming each bad field
    (at most MAX_REPORTED_ERRORS of them: an answer summarises, it never echoes a
    document), or naming the size when it is over MAX_DOCUMENT_BYTES."""
    try:
        check_document(document)
        clean = ClusterDocument.model_validate(document).model_dump(mode="json")
    except OperatorError as exc:
        raise InvalidCluster(str(exc)) from None
    except ValidationError as exc:
        errors = [
            {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]}
            for e in exc.errors()[:MAX_REPORTED_ERRORS]
        ]
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])
        more = exc.error_count() - len(errors)
        if more > 0:
            where += f" (and {more} more)"
        raise InvalidCluster(f"the cluster document is invalid: {where}", errors) from None
    size = len(bson.encode(clean))
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidCluster(
            f"the cluster document would be {size} bytes; the limit is {MAX_DOCUMENT_BYTES} "
            "(remove entries rather than adding more)"
        )
    return clean


def normalised(document: dict) -> dict:
    """A stored document as the model reads it (defaults filled in); as it is if invalid."""
    try:
        return validated(document)
    except InvalidCluster:
        return document


def _sort_spec(sort: str | None) -> list[tuple[str, int]]:
    """``"-gpus.count,id"`` -> [("gpus.count", DESCENDING), ("id", ASCENDING)]."""
    spec = []
    for part in (sort or "").split(","):
        part = part.strip()
        if not part:
            continue
        field = part.lstrip("+-")
        if not field or field.startswith("$"):
            raise OperatorError(f"sort: {part!r} is not a field name")
        spec.append((field, DESCENDING if part.startswith("-") else ASCENDING))
    return spec


def _projection(fields: str | None) -> dict[str, int]:
    if not fields:
        return dict(_HIDDEN)
    chosen = [f.strip() for f in fields.split(",") if f.strip()]
    for field in chosen:
        if field.startswith("$") or field.startswith("_"):
            raise OperatorError(f"fields: {field!r} is not a field name")
    return {"_id": 0, **{field: 1 for field in chosen}}


class ClusterStore:
    """CRUD and queries on the clusters collection."""

    def __init__(self, db: Database, query_timeout_seconds: float = 5.0) -> None:
        self.collection = db[COLLECTION]
        self.scratch = db[SCRATCH]
        self.query_timeout_seconds = query_timeout_seconds

    def ensure_indexes(self) -> None:
        self.collection.create_index([("id", ASCENDING)], unique=True)
        for field in ("regionId", "status", "tags"):
            self.collection.create_index([(field, ASCENDING)])

    def create(self, document: dict) -> dict:
        clean = validated(document)
        try:
            self.collection.insert_one({**clean, _REVISION: 1})
        except DuplicateKeyError:
            raise ClusterConflict(f"a cluster with id {clean['id']!r} exists already") from None
        return clean

    def get(self, cluster_id: str) -> dict:
        document = self.collection.find_one({"id": cluster_id}, _HIDDEN)
        if document is None:
            raise ClusterNotFound(f"no cluster has id {cluster_id!r}")
        return document

    def delete(self, cluster_id: str) -> None:
        if self.collection.delete_one({"id": cluster_id}).deleted_count == 0:
            raise ClusterNotFound(f"no cluster has id {cluster_id!r}")

    def list(
        self, *, region: str | None = None, status: str | None = None, tag: str | None = None,
        skip: int = 0, limit: int = 50,
    ) -> tuple[list[dict], int]:
        """One page of clusters ordered by id, without their per-node data, and the total.

        The filters are plain equality on indexed fields: user text is never an operator.
        """
        filter_: dict[str, str] = {}
        for field, value in (("regionId", region), ("status", status), ("tags", tag)):
            if value is not None:
                filter_[field] = value
        total = self.collection.count_documents(filter_)
        cursor = (
            self.collection.find(filter_, {**_HIDDEN, "nodes.nodeData": 0})
            .sort("id", ASCENDING)
            .skip(skip)
            .limit(limit)
        )
        return list(cursor), total

    def count(self) -> int:
        """How many clusters the registry holds (the collection's metadata, not a scan)."""
        with pymongo.timeout(_COUNT_TIMEOUT_SECONDS):
            return self.collection.estimated_document_count()

    def query(
        self, filter_: dict, *, limit: int = 100, skip: int = 0, sort: str | None = None,
        fields: str | None = None,
    ) -> list[dict]:
        check_filter(filter_)
        cursor = self.collection.find(filter_, _projection(fields)).skip(skip).limit(
            min(limit, MAX_QUERY_LIMIT)
        )
        spec = _sort_spec(sort)
        if spec:
            cursor = cursor.sort(spec)
        return bounded(self.query_timeout_seconds, lambda: list(cursor))

    def update(self, cluster_id: str, update: dict) -> dict:
        """Apply a MongoDB update document; the result must still be a valid cluster.

        The settings that configure governance (GOVERNANCE_FIELDS) are not the registry's
        to change: whatever form the update takes (a dotted path, ``$unset``, an array
        operator, a whole ``config``), a result that differs there is refused.
        """
        check_update(update)

        def change(current: dict) -> dict:
            new = validated(self.preview(current, update))
            refuse_governance_changes(current, new, "PUT /clusters/{id}", normalised)
            return new

        return self.transform(cluster_id, change)

    def transform(self, cluster_id: str, change: Callable[[dict], dict]) -> dict:
        """Replace the document by ``change(current)``, validated, without lost updates."""
        with _writer_lock(cluster_id):
            return self._compare_and_swap(cluster_id, change)

    def _compare_and_swap(self, cluster_id: str, change: Callable[[dict], dict]) -> dict:
        for attempt in range(_CAS_ATTEMPTS):
            current = self.collection.find_one({"id": cluster_id}, {"_id": 0})
            if current is None:
                raise ClusterNotFound(f"no cluster has id {cluster_id!r}")
            revision = current.pop(_REVISION, 0)
            new = validated(change(current))
            if new["id"] != cluster_id:
                raise InvalidCluster("the cluster id cannot be changed")
            replaced = self.collection.find_one_and_replace(
                {"id": cluster_id, _REVISION: revision},
                {**new, _REVISION: revision + 1},
                projection=_HIDDEN,
                return_document=ReturnDocument.AFTER,
            )
            if replaced is not None:
                return replaced
            # Another writer won; a jittered, growing pause spreads concurrent writers out.
            pause = min(_CAS_MAX_PAUSE_SECONDS, 0.001 * 2**attempt)
            time.sleep(random.uniform(0, pause))  # noqa: S311 - jitter, not a secret
        raise ClusterConflict(
            f"cluster {cluster_id!r} kept changing under {_CAS_ATTEMPTS} concurrent updates; "
            "this one was not applied, retry it"
        )

    def preview(self, current: dict, update: dict) -> dict:
        """``current`` with ``update`` applied by the database, on a scratch copy."""
        key = str(uuid.uuid4())
        self.scratch.insert_one({**current, "_id": key})
        try:
            result = self.scratch.find_one_and_update(
                {"_id": key}, update, return_document=ReturnDocument.AFTER
            )
        except OperationFailure as exc:
            reason = (exc.details or {}).get("errmsg") or str(exc)
            reason = re.sub(r"\s*\{_id: [^}]*\}", "", reason.split(":: caused by ::")[-1]).strip()
            raise InvalidCluster(f"the update cannot be applied: {reason}") from None
        finally:
            self.scratch.delete_one({"_id": key})
        result.pop("_id", None)
        return result
