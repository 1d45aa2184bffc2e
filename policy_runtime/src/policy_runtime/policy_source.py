"""Reading a policy this runtime has not got from the network's policies system.

An executor with a database of its own holds none of the network's policies: every policy
the policies system forwards to it would be "not found". With a policy source configured
(AIOS_POLICY_SOURCE_URL), a lookup miss asks the source for that exact URI
(``GET /policies/{uri}``), checks that the answer is the policy asked for and that its code
hashes to its ``code_sha256``, and the service keeps it as the published version (a URI
names one code for ever, so a fetched version never goes stale). Anything else fails
closed: an unreachable or refusing source, or an answer that does not check out, is an
error naming the source, and nothing else is evaluated in the policy's place.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from policy_runtime.executors.client import RemoteExecutionError
from policy_runtime.models import PolicyCreate

# Fields the source's store adds to a published policy; this runtime's store adds its own.
_STORE_FIELDS = frozenset({"_id", "code_sha256", "created_at", "updated_at"})


class PolicySourceError(RemoteExecutionError):
    """The policy source could not be asked, refused, or answered something that does not
    check out; the evaluation fails closed (a 502 naming the source)."""


class PolicySource:
    """The policies system a lookup miss is read from, with a token of ``policies:read``."""

    def __init__(
        self, url: str, token_file: Path, *, timeout_seconds: float, max_bytes: int
    ) -> None:
        self.url = url.rstrip("/")
        self.token_file = token_file
        self.timeout_seconds = timeout_seconds
        self.max_bytes = max_bytes

    def _token(self) -> str:
        # Read on every fetch (a miss, so rarely): a rotated Secret takes effect at once.
        try:
            token = self.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PolicySourceError(
                f"policy source {self.url}: AIOS_POLICY_SOURCE_TOKEN_FILE={self.token_file} "
                f"cannot be read: {exc.strerror}"
            ) from None
        if not token:
            raise PolicySourceError(
                f"policy source {self.url}: AIOS_POLICY_SOURCE_TOKEN_FILE={self.token_file} "
                "is empty"
            )
        return token

    def fetch(self, uri: str) -> dict[str, Any] | None:
        """The source's document for exactly ``uri``, checked; None when it has none."""
        url = f"{self.url}/policies/{quote(uri, safe='')}"
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}
        try:
            # Never follow a redirect: it could take the request (and the token) anywhere.
            with httpx.stream(
                "GET", url, headers=headers, timeout=self.timeout_seconds,
                follow_redirects=False,
            ) as response:
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    raise PolicySourceError(
                        f"policy source {self.url} answered {response.status_code} for "
                        f"{uri!r}{_refusal_hint(response.status_code)}; failing closed"
                    )
                body = _read_bounded(
                    response, self.max_bytes, self.url,
                    deadline=time.monotonic() + self.timeout_seconds,
                )
        except httpx.HTTPError as exc:
            raise PolicySourceError(
                f"policy source {self.url} cannot be reached for {uri!r}: {exc}; failing closed"
            ) from None
        return checked_document(body, uri, self.url)


def _refusal_hint(status_code: int) -> str:
    if status_code in (401, 403):
        return (" (the token of AIOS_POLICY_SOURCE_TOKEN_FILE needs policies:read there, "
                "e.g. a reader token)")
    return ""


def _read_bounded(
    response: httpx.Response, max_bytes: int, source: str, *, deadline: float
) -> bytes:
    # httpx's timeout bounds each read; the deadline bounds them all (a source that
    # trickles its answer byte by byte).
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        if time.monotonic() > deadline:
            raise PolicySourceError(
                f"policy source {source} did not finish its answer within "
                "AIOS_REMOTE_TIMEOUT_SECONDS; failing closed"
            )
        size += len(chunk)
        if size > max_bytes:
            raise PolicySourceError(
                f"policy source {source} answered more than {max_bytes} bytes "
                "(AIOS_MAX_BODY_BYTES + AIOS_MAX_CODE_BYTES); failing closed"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def checked_document(body: bytes, uri: str, source: str) -> dict[str, Any]:
    """The parsed answer, if it is the policy ``uri`` and its code is the hashed code."""
    try:
        document = json.loads(body)
    except ValueError:
        raise PolicySourceError(
            f"policy source {source} answered something other than JSON for {uri!r}"
        ) from None
    if not isinstance(document, dict):
        raise PolicySourceError(f"policy source {source} answered no policy document for {uri!r}")
    if document.get("policy_rule_uri") != uri:
        raise PolicySourceError(
            f"policy source {source} answered policy_rule_uri "
            f"{str(document.get('policy_rule_uri'))[:200]!r} when asked for {uri!r}; refused"
        )
    code = document.get("code")
    if not isinstance(code, str) or not isinstance(document.get("code_sha256"), str):
        raise PolicySourceError(
            f"policy source {source} answered {uri!r} without its code and code_sha256"
        )
    if hashlib.sha256(code.encode()).hexdigest() != document["code_sha256"]:
        raise PolicySourceError(
            f"policy source {source} answered code for {uri!r} that does not hash to its "
            "code_sha256; refused"
        )
    return document


def as_publish_request(
    document: dict[str, Any], source: str
) -> tuple[PolicyCreate, dict[str, Any]]:
    """The fetched document as a publish request and the extra fields kept as they are,
    so the same validation runs on it as on a policy published here."""
    fields = set(PolicyCreate.model_fields) - {"code_archive"}
    try:
        body = PolicyCreate.model_validate({k: v for k, v in document.items() if k in fields})
    except ValidationError as exc:
        raise PolicySourceError(
            f"policy source {source} answered {document['policy_rule_uri']!r}, which is not a "
            f"valid policy here: {exc.errors()[0].get('msg', exc)}"
        ) from None
    extra = {k: v for k, v in document.items() if k not in fields | _STORE_FIELDS}
    extra["fetched_from"] = source
    return body, extra


class SingleFlight:
    """One lock per key while someone holds or waits for it: concurrent misses for one URI
    fetch once, the others then find it stored."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)
