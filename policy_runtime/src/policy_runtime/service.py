"""The policies use cases behind the HTTP routes (ours and upstream's aliases)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

from policy_runtime import package, schemas
from policy_runtime.evaluation import Outcome, PolicyEvaluator
from policy_runtime.governance.decisions import DecisionLog
from policy_runtime.metrics import RuntimeMetrics
from policy_runtime.models import EvalRequest, PolicyCreate, policy_rule_uri
from policy_runtime.policy_source import (
    PolicySource,
    PolicySourceError,
    SingleFlight,
    as_publish_request,
)
from policy_runtime.store.policies import PolicyReferenced, PolicyStore

_URL = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://\S*\s*$")


class PolicyNotFound(Exception):
    """No policy is published under the URI."""


class RequestTooLarge(Exception):
    """Part of the request exceeds a configured size limit."""


class BadPolicyRequest(Exception):
    """The publish request is inconsistent; the message says how to fix it."""


class PolicyService:
    """Publishing, reading, deleting and evaluating policies, with a short read cache."""

    def __init__(
        self,
        store: PolicyStore,
        evaluator: PolicyEvaluator,
        metrics: RuntimeMetrics,
        *,
        max_code_bytes: int,
        cache_seconds: float,
        source: PolicySource | None = None,
    ) -> None:
        self.store = store
        self.evaluator = evaluator
        self.metrics = metrics
        self.max_code_bytes = max_code_bytes
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        # Where a lookup miss is read from (an executor with a database of its own).
        self.source = source
        self._fetches = SingleFlight()

    # -- publishing --------------------------------------------------------------------
    def _source(self, body: PolicyCreate) -> str:
        if (body.code is None) == (body.code_archive is None):
            raise BadPolicyRequest("give exactly one of code (the source) or code_archive")
        if body.code_archive is not None:
            return package.source_from_archive(
                package.decode_base64(body.code_archive), self.max_code_bytes
            )
        assert body.code is not None
        if _URL.match(body.code):
            raise BadPolicyRequest(
                "code is a URL; this runtime never fetches code from the network. Put the "
                "source in code, or upload the package as code_archive"
            )
        size = len(body.code.encode())
        if size > self.max_code_bytes:
            raise RequestTooLarge(
                f"code is {size} bytes; the limit is {self.max_code_bytes} (AIOS_MAX_CODE_BYTES)"
            )
        return body.code

    def publish(
        self, body: PolicyCreate, extra: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Validate, compile and contract-check in the sandbox, then store immutably.

        ``extra``: more fields to store as they are (an upstream record's own fields)."""
        uri = body.uri
        if body.policy_rule_uri is not None and body.policy_rule_uri != uri:
            raise BadPolicyRequest(
                f"policy_rule_uri {body.policy_rule_uri!r} does not match name, version and "
                f"release_tag, which give {uri!r}"
            )
        source = self._source(body)
        document = body.model_dump(exclude={"code_archive"})
        document.update(extra or {})
        document.update(code=source, policy_rule_uri=uri)
        schemas.check_schemas(document)
        schemas.check_defaults(document)  # defaults that fail their schema fail every call
        self.evaluator.check(source)  # raises CompileError / InvalidPolicy / ...
        return self.store.publish(document)

    # -- reading -----------------------------------------------------------------------
    def _cached(self, uri: str) -> dict[str, Any] | None:
        cached = self._cache.get(uri)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        return None

    def get(self, uri: str) -> dict[str, Any]:
        cached = self._cached(uri)
        if cached is not None:
            return cached
        now = time.monotonic()
        document = self.store.get(uri)
        if document is None:
            document = self._from_source(uri)
        if self.cache_seconds > 0:
            with self._lock:
                self._cache[uri] = (now + self.cache_seconds, document)
        return document

    def _from_source(self, uri: str) -> dict[str, Any]:
        """A policy not stored here, read from the policy source and kept as published.

        PolicyNotFound when there is no source or it has no such policy; PolicySourceError
        (fail closed) when it cannot be asked or its answer does not check out."""
        if self.source is None:
            raise PolicyNotFound(self.not_found_message(uri))
        with self._fetches.hold(uri):
            # Concurrent misses wait here for the first; it has stored the policy since.
            document = self.store.get(uri)
            if document is not None:
                return document
            if self.store.taken(uri):  # deleted here: its URI never comes back
                raise PolicyNotFound(self.not_found_message(uri))
            fetched = self.source.fetch(uri)
            if fetched is None:
                raise PolicyNotFound(
                    f"{self.not_found_message(uri)}, here or at the policy source "
                    f"{self.source.url}"
                )
            body, extra = as_publish_request(fetched, self.source.url)
            if policy_rule_uri(body.name, body.version, body.release_tag) != uri:
                # the URI matched, but the name and version it is made of did not
                raise PolicySourceError(
                    f"policy source {self.source.url} answered {uri!r} with a name, version "
                    "or release tag that make another URI; refused"
                )
            document, _ = self.publish(body, extra)
            return document

    def update_fields(self, uri: str, fields: dict[str, Any]) -> None:
        """Set descriptive fields of a published policy (the caller checked which)."""
        with self._lock:
            self._cache.pop(uri, None)
        if not self.store.update_fields(uri, fields):
            raise PolicyNotFound(self.not_found_message(uri))
        with self._lock:
            self._cache.pop(uri, None)

    def not_found_message(self, uri: str) -> str:
        """Why ``uri`` names no policy, naming the full URIs when only the release tag
        is missing (``name:version`` for what was published as ``name:version-stable``)."""
        message = f"no policy is published as {uri!r}"
        name, _, version = uri.rpartition(":")
        if not name or not version or "-" in version:
            return message
        releases = self.store.releases(name, version)
        if releases:
            listed = ", ".join(repr(r) for r in releases)
            message += (f"; published with a release tag as {listed} — a policy URI is "
                        "<name>:<version>-<release_tag>")
        return message

    def delete(self, uri: str, *, force: bool = False) -> list[dict[str, str]]:
        """Delete (tombstone) a policy; the clusters that ran it are returned.

        A policy that clusters' maps or stability checkers reference, or that is a node of
        a stored graph, is refused (PolicyReferenced, naming them) unless ``force``; a
        forced deletion is recorded in the decision log of each of those clusters and
        actions.
        """
        existing = self.store.get(uri)
        if existing is None:
            raise PolicyNotFound(f"no policy is published as {uri!r}")
        references = self.store.references(uri)
        graphs = self.store.graph_references(uri)
        if (references or graphs) and not force:
            raise PolicyReferenced(uri, references, graphs)
        with self._lock:
            self._cache.pop(uri, None)
        if not self.store.delete(uri, force=force, references=references):
            raise PolicyNotFound(f"no policy is published as {uri!r}")
        log = DecisionLog(self.store.db)
        for reference in references:
            log.record_event(
                cluster_id=reference["cluster_id"], action=reference["action"],
                event="policy_deleted", policy_rule_uri=uri,
                code_sha256=existing.get("code_sha256", ""), forced=True,
            )
        return references

    # -- deciding ----------------------------------------------------------------------
    async def evaluate(
        self, uri: str, request: EvalRequest, request_bytes: int | None = None
    ) -> Outcome:
        """One decision, from the event loop: the database is only asked on a cache miss.
        ``request_bytes``, the size of the body the request came in, when known."""
        policy = self._cached(uri) or await asyncio.to_thread(self.get, uri)
        outcome = await self.evaluator.evaluate_async(
            policy,
            request.input_data,
            parameters=request.parameters,
            settings=request.settings,
            context=request.context,
            cluster_id=request.cluster_id,
            request_bytes=request_bytes,
        )
        self.metrics.record_decision(
            "ok" if outcome.ok else outcome.error_type or "error", outcome.duration_ms / 1000
        )
        return outcome
