"""The executors collection of the policies system: where remote policy executors live.

An executor is another runtime in ``policies`` mode. ``POST /executor/{id}/execute_policy``
on the policies system forwards to that executor's ``POST /execute_policy``, as upstream
AIOS does, with the executor's own token: each executor is registered with an
``executor`` token of its own (only ever sent to it; the runtime's token never is). The
token is kept here so that it can be sent; listings never show it.
"""

from __future__ import annotations

from urllib.parse import urlparse

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

COLLECTION = "executors"
_HIDDEN = {"_id": 0, "token": 0, "token_name": 0}


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

    def register(
        self, executor_id: str, url: str, token: str = "", token_name: str = ""
    ) -> dict:
        document = {"id": executor_id, "url": checked_url(url)}
        try:
            self.collection.insert_one({**document, "token": token, "token_name": token_name})
        except DuplicateKeyError:
            raise ExecutorConflict(f"executor {executor_id!r} is registered already") from None
        return document

    def get(self, executor_id: str) -> dict:
        document = self.collection.find_one({"id": executor_id}, _HIDDEN)
        if document is None:
            raise ExecutorNotFound(f"no executor is registered as {executor_id!r}")
        return document

    def exists(self, executor_id: str) -> bool:
        return self.collection.find_one({"id": executor_id}, {"_id": 1}) is not None

    def get_with_token(self, executor_id: str) -> dict:
        """The executor with its token (to send it), for the forwarding route only."""
        document = self.collection.find_one({"id": executor_id}, {"_id": 0})
        if document is None:
            raise ExecutorNotFound(f"no executor is registered as {executor_id!r}")
        return document

    def list(self) -> list[dict]:
        return list(self.collection.find({}, _HIDDEN).sort("id", ASCENDING))

    def delete(self, executor_id: str) -> dict:
        """Remove it; returns what was removed (its token's name, to revoke it)."""
        document = self.collection.find_one_and_delete({"id": executor_id}, {"_id": 0})
        if document is None:
            raise ExecutorNotFound(f"no executor is registered as {executor_id!r}")
        return document
