"""The MongoDB client of the service (a real MongoDB, or the embedded server)."""

from __future__ import annotations

from pymongo import MongoClient

# Fail fast when the database is away: requests answer 503 instead of hanging.
_TIMEOUTS_MS = {
    "serverSelectionTimeoutMS": 3000,
    "connectTimeoutMS": 3000,
    "socketTimeoutMS": 10000,
}


def connect(uri: str) -> MongoClient:
    return MongoClient(uri, appname="aios-policy-runtime", tz_aware=True, **_TIMEOUTS_MS)


def ping(client: MongoClient) -> bool:
    try:
        client.admin.command("ping")
    except Exception:  # any failure means "not healthy"; the reason is logged by the caller
        return False
    return True

