"""The executors collection of the policies system: where remote policy executors live.

An executor is another runtime in ``policies`` mode. ``POST /executor/{id}/execute_policy``
on the policies system forwards to that executor's ``POST /execute_policy``, as upstream
AIOS does.
"""

from __future__ import annotations

from urllib.parse import urlparse

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

COLLECTION = "executors"
_HIDDEN = {"_id": 0}


class ExecutorNotFound(LookupError):
    """No executor has this id."""


class ExecutorConflict(Exception):
    """An executor with this id is registered already."""


class InvalidExecutor(ValueError):
    """The id or URL cannot work."""


def checked_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query:
        raise InvalidExecutor(f"url {url!r} must be http(s)://host[:port][/path] without a query")
    return url.rstrip("/")


class ExecutorRegistry:
    def __init__(self, db: Database) -> None:
        self.collection = db[COLLECTION]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("id", ASCENDING)], unique=True)

    def register(self, executor_id: str, url: str) -> dict:
        document = {"id": executor_id, "url": checked_url(url)}
        try:
            self.collection.insert_one(dict(document))
        except DuplicateKeyError:
            raise ExecutorConflict(f"executor {executor_id!r} is registered already") from None
        return document

    def get(self, executor_id: str) -> dict:
        document = self.collection.find_one({"id": executor_id}, _HIDDEN)
        if document is None:
            raise ExecutorNotFound(f"no executor is registered as {executor_id!r}")
        return document

    def list(self) -> list[dict]:
        return list(self.collection.find({}, _HIDDEN).sort("id", ASCENDING))

    def delete(self, executor_id: str) -> None:
        if self.collection.delete_one({"id": executor_id}).deleted_count == 0:
            raise ExecutorNotFound(f"no executor is registered as {executor_id!r}")
