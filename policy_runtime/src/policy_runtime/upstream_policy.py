"""Upstream AIOS policy records (``PolicyRule``) on the compatibility routes.

Upstream's clients send and read the whole record: every field of ours, plus
``functionality_data`` and ``resource_estimates``, ``tags`` as a comma-separated string,
and ``code`` as the URL of a code archive. On the compatibility routes (only there) such a
record is accepted as it is: the fields this runtime knows are validated as on
``POST /policies``, the upstream-only fields and any other field are stored as sent, and
reading the policy back through ``GET /policy/{uri}`` or ``POST /policy/query`` answers
the record as it was sent (``code`` the URL, ``tags`` the string), with this runtime's
additions beside it (which a record sent back may echo: they are ignored). The source
unpacked from the archive is what runs; how it was sent is kept under ``upstream`` in the
stored document.

A published version stays immutable: ``PUT /policy/{uri}`` updates only what describes
the policy (``description``, ``tags``, ``metadata``, ``type``, the upstream-only and other
fields) and refuses a record whose code or behaviour (``code_type``, default settings and
parameters, schemas) differs, naming the version to publish instead.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from policy_runtime import package
from policy_runtime.archive_fetch import FetchedArchive
from policy_runtime.clusters.operators import check_document, check_filter
from policy_runtime.clusters.query_limits import InvalidQuery
from policy_runtime.models import MAX_DOCUMENT_DEPTH, PolicyCreate, json_depth, policy_rule_uri
from policy_runtime.schemas import SCHEMA_FIELDS
from policy_runtime.service import BadPolicyRequest
from policy_runtime.store.policies import PolicyConflict

NATIVE_FIELDS = frozenset(PolicyCreate.model_fields)
# Upstream's PolicyRule fields that this runtime does not use: stored and answered as sent.
UPSTREAM_FIELDS: dict[str, Any] = {"functionality_data": {}, "resource_estimates": {}}
# The runtime's own fields of a stored document: a record echoing them (read, then sent
# back) is accepted, and they are ignored, never stored from a client.
RESERVED = frozenset(
    {
        "_id",
        "upstream",
        "code_sha256",
        "created_at",
        "updated_at",
        "deleted",
        "deleted_at",
        "deleted_with_force",
        "deleted_references",
    }
)
# What PUT /policy/{uri} may change: it describes the policy, it does not decide.
DESCRIPTIVE = ("description", "tags", "metadata", "type")
# What decides with the code: part of the published version, never changed in place.
BEHAVIOURAL = (
    "code_type",
    "policy_settings",
    "policy_parameters",
    *SCHEMA_FIELDS,
    "management_commands_schema",
)
# Fields of ours whose null (an upstream record may hold one) means "the default".
_NULL_IS_DEFAULT = frozenset(
    {
        "release_tag",
        "code_type",
        "type",
        "description",
        "tags",
        "metadata",
        "policy_settings",
        "policy_parameters",
        "management_commands_schema",
        "policy_rule_uri",
        "code_archive",
    }
)
_URL = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*://\S*\s*$")
_MAX_EXTRA_FIELDS = 100


class BadRecord(BadPolicyRequest):
    """The upstream record cannot be accepted; the message names the field."""


def is_url(code: object) -> bool:
    return isinstance(code, str) and bool(_URL.match(code))


def validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(part) for part in error.get("loc", ())) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = f" (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return "; ".join(parts) + more


@dataclass
class UpstreamRecord:
    """One upstream PolicyRule, split into what this runtime validates and the rest."""

    policy: PolicyCreate
    code_url: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    tags_text: str | None = None

    @property
    def uri(self) -> str:
        return self.policy.uri

    def with_source(self, source: str) -> PolicyCreate:
        """The policy to publish, with the source unpacked from the code URL's archive."""
        return self.policy.model_copy(update={"code": source, "code_archive": None})

    def stored_fields(self, archive: FetchedArchive | None = None) -> dict[str, Any]:
        """What the stored document holds beside the fields of ours."""
        upstream: dict[str, Any] = {}
        if self.code_url is not None:
            upstream["code"] = self.code_url
        if archive is not None:
            upstream.update(archive_sha256=archive.sha256, archive_bytes=len(archive.data))
        if self.tags_text is not None:
            upstream["tags"] = self.tags_text
        return {**UPSTREAM_FIELDS, **self.fields, "upstream": upstream}


def _check_extra(name: object, value: Any) -> None:
    if (
        not isinstance(name, str)
        or not name
        or name.startswith("$")
        or "." in name
        or ("\0" in name)
    ):
        raise BadRecord(
            f"field {name!r}: a field name may not be empty, start with $ or contain '.'"
        )
    if json_depth(value) > MAX_DOCUMENT_DEPTH:
        raise BadRecord(f"field {name!r} is nested deeper than {MAX_DOCUMENT_DEPTH} levels")
    try:
        check_document({name: value})
    except ValueError as exc:
        raise BadRecord(f"field {name!r}: {exc}") from None


def parse(body: Any) -> UpstreamRecord:
    """BadRecord unless ``body`` is an upstream PolicyRule (or our own policy body)."""
    if not isinstance(body, dict):
        raise BadRecord("the body must be a JSON object: an upstream PolicyRule")
    native: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    for name, value in body.items():
        if name in RESERVED:
            continue  # this runtime's own fields, as a record read back holds them
        if name in NATIVE_FIELDS:
            if value is None and name in _NULL_IS_DEFAULT:
                continue
            native[name] = value
        else:
            _check_extra(name, value)
            fields[name] = value
    if len(fields) > _MAX_EXTRA_FIELDS + len(UPSTREAM_FIELDS):
        raise BadRecord(
            f"the record has {len(fields)} fields this runtime does not know; "
            f"at most {_MAX_EXTRA_FIELDS} are kept"
        )
    tags = native.get("tags")
    tags_text = tags if isinstance(tags, str) else None
    code = native.get("code")
    code_url = None
    if is_url(code):
        if native.get("code_archive") is not None:
            raise BadRecord(
                "give code (the archive's URL, or the source) or code_archive, not both"
            )
        code_url = str(code).strip()
        native["code"] = None
    # Upstream always writes "<name>:<version>-<release_tag>", also for an empty tag.
    uri = native.get("policy_rule_uri")
    if (
        isinstance(uri, str)
        and not native.get("release_tag")
        and uri == (f"{native.get('name')}:{native.get('version')}-")
    ):
        native.pop("policy_rule_uri")
    try:
        policy = PolicyCreate.model_validate(native)
    except ValidationError as exc:
        raise BadRecord(validation_message(exc)) from None
    if code_url is None and policy.code is None and policy.code_archive is None:
        raise BadRecord("code: give the archive's URL or the policy source (or code_archive)")
    return UpstreamRecord(policy, code_url, fields, tags_text)


def record_view(document: dict[str, Any]) -> dict[str, Any]:
    """A stored policy as upstream's clients read it: every PolicyRule field, as sent."""
    view = {k: v for k, v in document.items() if k not in ("_id", "upstream")}
    upstream = document.get("upstream") or {}
    for name in ("code", "tags"):
        if name in upstream:
            view[name] = upstream[name]
    for name, default in UPSTREAM_FIELDS.items():
        view.setdefault(name, default)
    for name in SCHEMA_FIELDS:
        view.setdefault(name, None)
    return view


def _without_free_ends(pattern: str) -> str:
    """``pattern`` without a leading or trailing ``.*``: the same matches for a search
    (``.*`` may match nothing), and a pattern the query allow-list can accept."""
    while pattern.startswith(".*") and not pattern.startswith(".*?"):
        pattern = pattern[2:]
    while pattern.endswith(".*"):
        body = pattern[:-2]
        backslashes = len(body) - len(body.rstrip("\\"))
        if backslashes % 2:  # "\\.*": a literal dot, repeated
            break
        pattern = body
    return pattern


def checked_filter(body: Any) -> dict[str, Any]:
    """A client's filter as it is run: regexes simplified as below, then through the
    operator allow-list (OperatorError or RegexRefused naming what it refuses)."""
    if not isinstance(body, dict):
        raise InvalidQuery("filter: the body must be a JSON object, a MongoDB filter")
    filter_ = simplify_regexes(body)
    check_filter(filter_)
    return filter_


def simplify_regexes(filter_: Any, depth: int = 0) -> Any:
    """The filter with leading and trailing ``.*`` taken off its ``$regex`` patterns.

    Upstream's search server turns ``LIKE "aiosv1.*"`` into ``{"$regex": "aiosv1\\..*"}``;
    the query allow-list refuses an unanchored pattern with ``*``, but without its free
    ends the pattern matches exactly the same policies and is accepted."""
    if depth > MAX_DOCUMENT_DEPTH:
        return filter_
    if isinstance(filter_, list):
        return [simplify_regexes(item, depth + 1) for item in filter_]
    if not isinstance(filter_, dict):
        return filter_
    simplified = {}
    for key, value in filter_.items():
        if (
            key == "$regex"
            and isinstance(value, str)
            and "x" not in str(filter_.get("$options", ""))
        ):
            simplified[key] = _without_free_ends(value)
        else:
            simplified[key] = simplify_regexes(value, depth + 1)
    return simplified


def next_version(version: str, taken: Callable[[str], bool]) -> str:
    """The first version after ``version`` (its last number counted up) not yet taken."""
    match = re.match(r"^(.*?)(\d+)(\D*)$", version)
    for step in range(1, 1000):
        if match:
            head, number, tail = match.groups()
            candidate = f"{head}{int(number) + step}{tail}"
        else:
            candidate = f"{version}.{step}"
        if not taken(candidate):
            return candidate
    return f"{version}.next"


@dataclass
class Update:
    """What ``PUT /policy/{uri}`` found: the fields to set, or why it refuses."""

    set_fields: dict[str, Any]
    changed: list[str]


class ImmutableVersion(PolicyConflict):
    """The record changes the code or behaviour of a published version."""


def plan_update(
    uri: str,
    existing: dict[str, Any],
    record: UpstreamRecord,
    *,
    source_of: Callable[[UpstreamRecord], tuple[str, FetchedArchive | None] | None],
    taken: Callable[[str], bool],
    max_code_bytes: int,
) -> Update:
    """The descriptive fields to set on ``existing``; ImmutableVersion when the record's
    code or behaviour differs (naming the version to publish instead)."""
    if record.uri != uri:
        raise BadRecord(
            f"the record names {record.uri!r} but the path {uri!r}: a policy's name, "
            "version and release tag are its URI and cannot change"
        )
    policy = record.policy
    name, version, tag = policy.name, policy.version, policy.release_tag

    def refuse(what: str) -> ImmutableVersion:
        version_next = next_version(version, lambda v: taken(policy_rule_uri(name, v, tag)))
        return ImmutableVersion(
            f"{uri} is published and immutable: its {what} cannot change. Publish the "
            f"changed record as a new version instead: version {version_next!r}, i.e. "
            f"{policy_rule_uri(name, version_next, tag)} (POST /policy), and point its "
            "users at that URI"
        )

    same_url = record.code_url is not None and record.code_url == (
        existing.get("upstream") or {}
    ).get("code")
    if not same_url:
        if record.code_url is None and policy.code_archive is not None:
            source: str | None = package.source_from_archive(
                package.decode_base64(policy.code_archive), max_code_bytes
            )
        elif record.code_url is None:
            source = policy.code
        else:
            fetched = source_of(record)
            source = fetched[0] if fetched else None
        if source is not None and (
            hashlib.sha256(source.encode()).hexdigest() != existing.get("code_sha256")
        ):
            raise refuse("code")
    dumped = policy.model_dump()
    differing = [
        name
        for name in BEHAVIOURAL
        if name in policy.model_fields_set and dumped[name] != existing.get(name)
    ]
    if differing:
        raise refuse(", ".join(differing))
    set_fields: dict[str, Any] = {
        name: dumped[name] for name in DESCRIPTIVE if name in policy.model_fields_set
    }
    set_fields.update(record.fields)
    upstream = dict(existing.get("upstream") or {})
    if "tags" in policy.model_fields_set:
        if record.tags_text is not None:
            upstream["tags"] = record.tags_text
        else:
            upstream.pop("tags", None)
    set_fields["upstream"] = upstream
    changed = sorted(name for name, value in set_fields.items() if existing.get(name) != value)
    return Update(set_fields, changed)
