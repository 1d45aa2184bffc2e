"""Scoped API tokens, stored in MongoDB as a SHA-256 hash (never the token itself).

A token is shown once, when it is created. Lookups are cached in-process for at most
``cache_seconds`` (1 s by default) keyed by the hash, so a revocation or an expiry made
on any replica takes effect on every replica within that time, and the request path
costs one hash and one dict lookup while the entry is fresh.

Tokens may also be provisioned: listed by their SHA-256 in a tokens file (``AIOS_TOKENS_FILE``,
a mounted Secret an installer writes), read once at start. They are accepted like stored
tokens of their role and scope, are never written to the database, and change only with the
file (and a restart): the API lists them (``source: file``) but cannot revoke them.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from policy_runtime.auth.permissions import SCOPED_ROLES, Role
from policy_runtime.auth.principal import Principal
from policy_runtime.models import ProvisionedToken

COLLECTION = "api_tokens"
TOKEN_PREFIX = "aios_"  # noqa: S105 - a marker, not a secret
# last_used is written at most this often per token, off the request path.
LAST_USED_EVERY = timedelta(seconds=60)
_CACHE_MAX = 10_000
_PUBLIC = {"_id": 0, "token_sha256": 0}
_HIDDEN = ("_id", "token_sha256", "_principal")


class TokenConflict(Exception):
    """A token with this name exists already."""


class TokenNotFound(LookupError):
    """No live token has this name."""


class TokenProvisioned(Exception):
    """The token comes from the tokens file: only a new file (and a restart) changes it."""


class InvalidToken(ValueError):
    """The request cannot make a token; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def token_hash(token: str | bytes) -> str:
    data = token.encode() if isinstance(token, str) else token
    return hashlib.sha256(data).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def check_request(
    role: str, clusters: list[str] | None, policy_prefixes: list[str] | None,
    expires: datetime | None,
) -> None:
    """InvalidToken naming the field when the request cannot make a token."""
    try:
        parsed = Role(role)
    except ValueError:
        raise InvalidToken(
            "role", f"unknown role {role!r}; one of {', '.join(r.value for r in Role)}"
        ) from None
    if parsed not in SCOPED_ROLES:
        if clusters:
            raise InvalidToken("clusters", f"role {role} takes no cluster scope")
        if policy_prefixes:
            raise InvalidToken("policy_prefixes", f"role {role} takes no policy prefixes")
    elif not clusters:
        raise InvalidToken("clusters", f"role {role} needs at least one cluster id")
    if expires is not None:
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        if expires <= datetime.now(UTC):
            raise InvalidToken("expires", f"expiry {expires.isoformat()} is in the past")


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def public(document: dict) -> dict:
    """A token's record as the API shows it: never its hash."""
    out = {k: v for k, v in document.items() if k not in _HIDDEN}
    out.setdefault("source", "store")
    for key in ("created", "expires", "last_used", "revoked"):
        value = _aware(out.get(key))
        out[key] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _entry_problems(index: int, item: object) -> tuple[ProvisionedToken | None, list[str]]:
    try:
        entry = ProvisionedToken.model_validate(item)
    except ValidationError as exc:
        return None, [
            f"entry {index}, field {'.'.join(map(str, error['loc'])) or '(the entry)'}: "
            f"{error['msg']}" for error in exc.errors()
        ]
    try:
        check_request(entry.role, entry.clusters, entry.policy_prefixes, None)
    except InvalidToken as exc:
        return None, [f"entry {index}, field {exc.field}: {exc}"]
    return entry, []


def load_tokens_file(path: Path) -> list[dict]:
    """The token records of a tokens file: a JSON list of ``{name, sha256, role, clusters,
    policy_prefixes}`` (models.ProvisionedToken). ValueError naming each entry (by its index)
    and field that is wrong."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot be read: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"is not JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ValueError("must be a JSON list of tokens, [{name, sha256, role, ...}]")
    records: list[dict] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(raw):
        entry, found = _entry_problems(index, item)
        problems.extend(found)
        if entry is None:
            continue
        for field, value in (("name", entry.name), ("sha256", entry.sha256)):
            if (field, value) in seen:
                problems.append(
                    f"entry {index}, field {field}: the same as entry {seen[field, value]}'s"
                )
            seen.setdefault((field, value), index)
        records.append({
            "name": entry.name, "token_sha256": entry.sha256, "role": entry.role,
            "clusters": sorted(set(entry.clusters)),
            "policy_prefixes": sorted(set(entry.policy_prefixes)),
            "created": None, "created_by": "", "expires": None, "last_used": None,
            "revoked": None, "source": "file",
        })
    if problems:
        raise ValueError("; ".join(problems))
    return records


class TokenStore:
    def __init__(
        self, db: Database, cache_seconds: float = 1.0, *,
        provisioned: list[dict] | None = None, tokens_file: str = "",
    ) -> None:
        self.collection = db[COLLECTION]
        self.cache_seconds = cache_seconds
        # hash -> (fetched at, record or None)
        self._cache: dict[str, tuple[float, dict | None]] = {}
        self._lock = threading.Lock()
        # The tokens file's records, by hash and by name (load_tokens_file).
        self._provisioned = {d["token_sha256"]: d for d in provisioned or ()}
        self._provisioned_names = {d["name"]: d for d in provisioned or ()}
        self.tokens_file = tokens_file

    def ensure_indexes(self) -> None:
        self.collection.create_index([("name", ASCENDING)], unique=True)
        self.collection.create_index([("token_sha256", ASCENDING)], unique=True)

    def check_provisioned(self) -> None:
        """TokenConflict when a live stored token has the name or the hash of a token of
        the tokens file: the two would be confused in the audit log."""
        if not self._provisioned:
            return
        clash = self.collection.find_one(
            {"revoked": None, "$or": [{"name": {"$in": list(self._provisioned_names)}},
                                      {"token_sha256": {"$in": list(self._provisioned)}}]},
            {"_id": 0, "name": 1, "token_sha256": 1},
        )
        if clash is not None:
            named = self._provisioned.get(clash["token_sha256"], {}).get("name", clash["name"])
            raise TokenConflict(
                f"the tokens file {self.tokens_file} has token {named!r}, and the token store "
                f"holds a live token {clash['name']!r} with its name or its hash: revoke the "
                f"stored one (aios-policy token revoke {clash['name']}) or rename the file's"
            )

    def _refuse_provisioned(self, name: str) -> None:
        if name in self._provisioned_names:
            raise TokenProvisioned(
                f"token {name!r} comes from the tokens file {self.tokens_file} "
                "(AIOS_TOKENS_FILE): remove it from that file (its Secret) and restart the "
                "runtime"
            )

    def create(
        self, name: str, role: str, *, clusters: list[str] | None = None,
        policy_prefixes: list[str] | None = None, expires: datetime | None = None,
        created_by: str = "", secret: str | None = None,
    ) -> tuple[str, dict]:
        """(the token, shown only now; its public record). ``secret``: store a token made
        elsewhere (an executor's, created by the policies system) instead of a new one."""
        check_request(role, clusters, policy_prefixes, expires)
        if name in self._provisioned_names:
            raise TokenConflict(
                f"a token named {name!r} exists already (in the tokens file {self.tokens_file})"
            )
        if secret is not None and len(secret) < 32:
            raise InvalidToken("token", "a token must be at least 32 characters")
        secret = secret or new_secret()
        document: dict[str, Any] = {
            "name": name, "token_sha256": token_hash(secret), "role": role,
            "clusters": sorted(set(clusters or ())),
            "policy_prefixes": sorted(set(policy_prefixes or ())),
            "created": datetime.now(UTC), "created_by": created_by,
            "expires": _aware(expires), "last_used": None, "revoked": None,
        }
        try:
            self.collection.insert_one(dict(document))
        except DuplicateKeyError:
            # A revoked token's name may be given to a new token (the audit log keeps
            # what the old one did); a live token's may not.
            retired = self.collection.delete_one({"name": name, "revoked": {"$ne": None}})
            if not retired.deleted_count:
                raise TokenConflict(f"a token named {name!r} exists already") from None
            try:
                self.collection.insert_one(dict(document))
            except DuplicateKeyError:
                raise TokenConflict(f"a token named {name!r} exists already") from None
        return secret, public(document)

    def list(self) -> list[dict]:
        stored = [public(d) for d in self.collection.find({}, _PUBLIC)]
        provisioned = [public(d) for d in self._provisioned.values()]
        return sorted(stored + provisioned, key=lambda record: record["name"])

    def get(self, name: str) -> dict:
        if name in self._provisioned_names:
            return public(self._provisioned_names[name])
        document = self.collection.find_one({"name": name}, _PUBLIC)
        if document is None:
            raise TokenNotFound(f"no token is named {name!r}")
        return public(document)

    def revoke(self, name: str) -> dict:
        """Mark the token revoked (the record stays, for the audit trail)."""
        self._refuse_provisioned(name)
        document = self.collection.find_one_and_update(
            {"name": name, "revoked": None}, {"$set": {"revoked": datetime.now(UTC)}},
            projection=_PUBLIC, return_document=True,
        )
        if document is None:
            raise TokenNotFound(f"no live token is named {name!r}")
        return public(document)

    def delete(self, name: str) -> None:
        self._refuse_provisioned(name)
        if self.collection.delete_one({"name": name}).deleted_count == 0:
            raise TokenNotFound(f"no token is named {name!r}")

    # -- the request path ---------------------------------------------------------------
    def cached(self, digest: str) -> tuple[bool, dict | None]:
        """(fresh, record): a record cached less than ``cache_seconds`` ago, or one of the
        tokens file (always fresh)."""
        provisioned = self._provisioned.get(digest)
        if provisioned is not None:
            return True, provisioned
        entry = self._cache.get(digest)
        if entry is None or time.monotonic() - entry[0] >= self.cache_seconds:
            return False, None
        return True, entry[1]

    def fetch(self, digest: str) -> dict | None:
        """Read the record from the database (and cache it); None if there is none."""
        if digest in self._provisioned:
            return self._provisioned[digest]
        document = self.collection.find_one({"token_sha256": digest}, {"_id": 0})
        if len(self._cache) >= _CACHE_MAX:
            with self._lock:
                self._cache.clear()
        self._cache[digest] = (time.monotonic(), document)
        if document is not None and document.get("revoked") is None:
            last = _aware(document.get("last_used"))
            now = datetime.now(UTC)
            if last is None or now - last >= LAST_USED_EVERY:
                self.collection.update_one(
                    {"token_sha256": digest}, {"$set": {"last_used": now}}
                )
                document["last_used"] = now
        return document

    @staticmethod
    def principal(document: dict | None) -> Principal | None:
        """The caller of a live record; None when it is missing, revoked or expired."""
        if document is None or document.get("revoked") is not None:
            return None
        expires = _aware(document.get("expires"))
        if expires is not None and expires <= datetime.now(UTC):
            return None
        principal = document.get("_principal")
        if principal is None:
            principal = Principal.of(
                document["name"], document["role"], document.get("clusters"),
                document.get("policy_prefixes"),
            )
            document["_principal"] = principal
        return principal
