"""The MongoDB client of the service (a real MongoDB, or the embedded server)."""

from __future__ import annotations

from pymongo import MongoClient

# Fail fast when the database is away: requests answer 503 instead of hanging.
_TIMEOUTS_MS = {
    "serverSelectionTimeoutMS": 3000,
    "connectTimeoutMS": 3000,
}
# Every write is acknowledged only once it is in the journal (j) of a majority of the
# replica set (a standalone server counts as its own majority): a crash, kill -9 or OOM
# kill of the database after the acknowledgement then loses nothing. These override any
# weaker ``w`` / ``journal`` option in the connection URI; a URI cannot weaken them.
WRITE_CONCERN = {"w": "majority", "journal": True}
DEFAULT_TIMEOUT_SECONDS = 10.0


def connect(uri: str, timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS) -> MongoClient:
    """The client; every operation gets ``timeout_seconds`` in all, sent to the server as
    its ``maxTimeMS`` (pymongo's client-side operation timeout), so no query or
    aggregation runs on in the database after the runtime gave up on it."""
    return MongoClient(
        uri,
        appname="aios-policy-runtime",
        tz_aware=True,
        timeoutMS=int(timeout_seconds * 1000),
        **WRITE_CONCERN,
        **_TIMEOUTS_MS,
    )


def ping(client: MongoClient) -> bool:
    try:
        client.admin.command("ping")
    except Exception:  # any failure means "not healthy"; the reason is logged by the caller
        return False
    return True
