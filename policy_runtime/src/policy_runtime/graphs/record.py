"""Upstream AIOS graph records (``Graph`` of its policies system), checked and stored.

Upstream's record: ``graph_name``, ``graph_version``, ``graph_release_tag`` (the URI is
``<name>:<version>-<release_tag>``), ``graph_metadata``, ``graph_function_ids`` (the
nodes), ``graph_connection_data`` (``{source: [targets]}``), ``graph_search_tags``,
``graph_description``, ``graph_input_schema``, ``graph_output_schema``. Here a node names
a published policy (its ``policy_rule_uri``): this runtime deploys no functions, it runs
each node's policy in the sandbox. Fields beyond upstream's are kept as sent, within the
same bounds as a policy record's.

The edges are stored as a list (``[{"source", "targets"}]``) rather than as upstream's
object, whose keys are policy URIs: field names with dots cannot be queried or updated
in MongoDB. Reads answer upstream's object again.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from policy_runtime.clusters.operators import OperatorError, check_document
from policy_runtime.graphs.dag import run_order
from policy_runtime.graphs.errors import InvalidGraph
from policy_runtime.models import (
    MAX_DOCUMENT_DEPTH,
    NAME_PATTERN,
    RELEASE_TAG_PATTERN,
    VERSION_PATTERN,
    json_depth,
    policy_rule_uri,
)
from policy_runtime.upstream_policy import validation_message

# Each node is one evaluation in the sandbox: a graph is a small pipeline of decisions.
MAX_NODES = 64
_MAX_EXTRA_FIELDS = 100
# The runtime's own fields of a stored graph: echoed by a record read back, ignored.
RESERVED = frozenset({"_id", "created_at", "updated_at"})
_EDGES = "graph_connection_data"


class GraphRecord(BaseModel):
    """The fields of upstream's ``Graph`` this runtime checks; others are kept as sent."""

    model_config = ConfigDict(extra="allow")

    graph_name: str = Field(pattern=NAME_PATTERN)
    graph_version: str = Field(pattern=VERSION_PATTERN)
    graph_release_tag: str = Field("", pattern=RELEASE_TAG_PATTERN)
    graph_uri: str | None = None
    graph_metadata: Any = Field(default_factory=dict)
    graph_function_ids: list[str] = Field(min_length=1, max_length=MAX_NODES)
    graph_connection_data: dict[str, list[str]] = Field(default_factory=dict)
    graph_search_tags: list[str] = Field(default_factory=list)
    graph_description: str = ""
    graph_input_schema: dict[str, Any] = Field(default_factory=dict)
    graph_output_schema: dict[str, Any] = Field(default_factory=dict)

    @property
    def uri(self) -> str:
        return policy_rule_uri(self.graph_name, self.graph_version, self.graph_release_tag)


def _check_extra(name: str, value: Any) -> None:
    if not name or name.startswith("$") or "." in name or "\0" in name:
        raise InvalidGraph(
            f"field {name!r}: a field name may not be empty, start with $ or contain '.'"
        )
    try:
        check_document({name: value})
    except OperatorError as exc:
        raise InvalidGraph(f"field {name!r}: {exc}") from None


def parse(body: Any) -> GraphRecord:
    """InvalidGraph unless ``body`` is an upstream graph record that can run: a DAG with
    one output node (which policies its nodes name is the store's to check)."""
    if not isinstance(body, dict):
        raise InvalidGraph("the body must be a JSON object: an upstream graph record")
    if json_depth(body) > MAX_DOCUMENT_DEPTH + 1:
        raise InvalidGraph(f"the record is nested deeper than {MAX_DOCUMENT_DEPTH} levels")
    fields = {
        name: value for name, value in body.items()
        if name not in RESERVED and not (value is None and name in GraphRecord.model_fields
                                         and name != "graph_function_ids")
    }
    extra = [name for name in fields if name not in GraphRecord.model_fields]
    if len(extra) > _MAX_EXTRA_FIELDS:
        raise InvalidGraph(
            f"the record has {len(extra)} fields this runtime does not know; "
            f"at most {_MAX_EXTRA_FIELDS} are kept"
        )
    for name in extra:
        _check_extra(name, fields[name])
    for name in ("graph_metadata", "graph_input_schema", "graph_output_schema"):
        if name in fields:
            _check_extra(name, fields[name])
    try:
        record = GraphRecord.model_validate(fields)
    except ValidationError as exc:
        raise InvalidGraph(validation_message(exc)) from None
    # Upstream writes "<name>:<version>-<release_tag>", also for an empty tag.
    upstream_uri = f"{record.graph_name}:{record.graph_version}-{record.graph_release_tag}"
    if record.graph_uri not in (None, record.uri, upstream_uri):
        raise InvalidGraph(
            f"graph_uri {record.graph_uri!r} does not match graph_name, graph_version and "
            f"graph_release_tag, which give {record.uri!r}"
        )
    run_order(record.graph_function_ids, record.graph_connection_data)
    return record


def to_document(record: GraphRecord) -> dict[str, Any]:
    """What the store keeps: the record, its URI ours, its edges as a list."""
    document = record.model_dump()
    document["graph_uri"] = record.uri
    document[_EDGES] = [
        {"source": source, "targets": targets}
        for source, targets in record.graph_connection_data.items()
    ]
    return document


def edges_of(document: dict[str, Any]) -> dict[str, list[str]]:
    """A stored graph's edges as upstream's ``{source: [targets]}``."""
    return {edge["source"]: list(edge["targets"]) for edge in document.get(_EDGES) or []}


def view(document: dict[str, Any]) -> dict[str, Any]:
    """A stored graph as upstream's clients read it."""
    shown = {name: value for name, value in document.items() if name != "_id"}
    shown[_EDGES] = edges_of(document)
    return shown
