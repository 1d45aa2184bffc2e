"""What each governed action hands its policy, as JSON Schemas.

Served at ``GET /action-inputs`` and ``GET /action-inputs/{action}``, shown in the
OpenAPI document, and used by ``aios-policy test`` to check that a case's ``input_data``
has the shape the policy will really get. Nodes and clusters are described by the same
pydantic models that validate cluster documents (the shapes onboarding produces).
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from policy_runtime.authoring import policy_kind
from policy_runtime.clusters.document import ClusterDocument, NodeData
from policy_runtime.governance.actions import (
    ACTIONS,
    ALIASES,
    STABILITY_CHECK,
    STABILITY_CHECKER,
    UnknownAction,
    canonical,
    declared_action,
)

_REAL_DATA = (
    "Real data: GPU model names as nvidia-smi reports them (\"NVIDIA A100-SXM4-80GB\", "
    "\"NVIDIA L4\"); memory in MiB as reported, so a \"24 GB\" card has e.g. 23034."
)


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its ``$defs`` references replaced by their definitions (so that
    it can be embedded anywhere, e.g. in the OpenAPI document)."""
    definitions = schema.pop("$defs", {})

    def resolve(value: Any) -> Any:
        if isinstance(value, dict):
            ref = value.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(copy.deepcopy(definitions[ref.rsplit("/", 1)[1]]))
            return {key: resolve(item) for key, item in value.items()}
        if isinstance(value, list):
            return [resolve(item) for item in value]
        return value

    return resolve(schema)


@cache
def node_schema() -> dict[str, Any]:
    schema = _inline(NodeData.model_json_schema())
    schema["description"] = f"A node as onboarding produces it. {_REAL_DATA}"
    return schema


@cache
def cluster_schema() -> dict[str, Any]:
    schema = _inline(ClusterDocument.model_json_schema())
    schema["description"] = "A cluster document as onboarding produces it (before the action)."
    return schema


def _object(description: str, properties: dict[str, Any], required: list[str]) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "description": description,
        "properties": properties,
        "required": required,
    }


_CLUSTER_ID = {"type": "string", "description": "the cluster the action is on"}
_PASSED_THROUGH = (
    "The body the caller of POST /pre-check/{action} sends, unchanged: this runtime "
    "does not carry out {action} itself, so its shape is agreed with that caller."
)


def _upstream(*, node: bool) -> dict[str, Any]:
    """The keys upstream AIOS's gateway gives its node pre-checks, beside ours. The
    actions always give them, but they stay out of ``required``: a test case or a dry
    check written with this runtime's keys alone is still the action's input."""
    keys: dict[str, Any] = {}
    if node:
        keys["node_data"] = {**node_schema(), "description": "the same node as node "
                             "(upstream AIOS's name for it)"}
    keys["cluster_data"] = {**cluster_schema(), "description": "the same cluster as "
                            "cluster (upstream AIOS's name for it)"}
    keys["cluster_metrics"] = {
        "type": ["object", "null"],
        "description": "always null here: upstream fills it from its global cluster "
                       "metrics database, which this runtime does not read (a policy "
                       "reading it with .get works unchanged)"}
    return keys


@cache
def _schemas() -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {
        "add_node": _object(
            "add_node (POST /cluster-actions/add-node): the new node and the cluster "
            "before it is added, each also under the key upstream AIOS's gateway gives it "
            "(node_data, cluster_data), and cluster_metrics. A policy may rewrite the node "
            "in its result's input_data, under node or node_data (or return the node "
            "itself as input_data, as upstream's gateway reads it).",
            {"cluster_id": _CLUSTER_ID, "node": node_schema(), "cluster": cluster_schema(),
             **_upstream(node=True)},
            ["cluster_id", "node", "cluster"],
        ),
        "remove_node": _object(
            "remove_node (DELETE /cluster-actions/remove-node/{node_id}): the node's id and "
            "the cluster before the node is removed, the cluster also under cluster_data "
            "as upstream AIOS's gateway names it, and cluster_metrics.",
            {"cluster_id": _CLUSTER_ID, "node_id": {"type": "string"},
             "cluster": cluster_schema(), **_upstream(node=False)},
            ["cluster_id", "node_id", "cluster"],
        ),
        "update_cluster": _object(
            "update_cluster (the governed cluster update): the fields to set, as dotted "
            "paths (\"clusterMetadata.description\"), and the cluster before the update. "
            "A policy may rewrite update in its result's input_data.",
            {"cluster_id": _CLUSTER_ID,
             "update": {"type": "object", "description": "dotted path -> new value"},
             "cluster": cluster_schema()},
            ["cluster_id", "update", "cluster"],
        ),
        "add_cluster": _object(
            "add_cluster (POST /clusters and the upstream gateway's /clusters/create): the "
            "new cluster document. A policy may rewrite cluster in its result's input_data.",
            {"cluster": cluster_schema()},
            ["cluster"],
        ),
        STABILITY_CHECK: _object(
            "What a stability checker gets on every check: the cluster document (under "
            "cluster_data and, as upstream's stability checker names it, cluster) and the "
            "node data last pushed with PUT /nodes-data (whatever the node agents report, "
            "e.g. {\"id\", \"ready\", \"cpu_percent\", \"memory_percent\", \"gpus\": "
            "[{\"health\", \"temperature_c\"}]}).",
            {"cluster_data": cluster_schema(), "cluster": cluster_schema(),
             "nodes_data": {"type": "array", "items": {"type": "object"}}},
            ["cluster_data", "nodes_data"],
        ),
    }
    for action in ACTIONS:
        if action not in schemas:
            schemas[action] = {
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "description": _PASSED_THROUGH.replace("{action}", action),
            }
    return schemas


def names() -> list[str]:
    """Every action with an input schema (the governed actions and the stability check)."""
    return sorted(_schemas())


def known() -> list[str]:
    """Every name ``input_schema`` accepts: the actions, the stability check, the aliases."""
    return [*names(), *sorted(ALIASES)]


def input_schema(action: str) -> dict[str, Any]:
    """The input schema of an action (upstream aliases accepted); UnknownAction naming
    the known ones if none."""
    if action == STABILITY_CHECK:
        return copy.deepcopy(_schemas()[STABILITY_CHECK])
    try:
        name = canonical(action)
    except UnknownAction:
        raise UnknownAction(f"unknown action {action!r}; the actions with an input schema: "
                            f"{', '.join(known())}") from None
    return copy.deepcopy(_schemas()[name])


def all_schemas() -> dict[str, dict[str, Any]]:
    return {name: input_schema(name) for name in names()}


def without_required(schema: Any) -> Any:
    """The schema, every ``required`` dropped: the shape of what is given, where a test
    case may leave parts out."""
    if isinstance(schema, dict):
        return {k: without_required(v) for k, v in schema.items() if k != "required"}
    if isinstance(schema, list):
        return [without_required(item) for item in schema]
    return schema


def action_of(document: dict) -> str | None:
    """The action a policy document is for: its metadata's ``action``, else the one
    governed action among its tags; ``stability_check`` for a stability checker."""
    if policy_kind(document) == STABILITY_CHECKER:
        return STABILITY_CHECK
    return declared_action(document)


def component_name(action: str) -> str:
    """``add_node`` -> ``AddNodeInput``: the action's input in the OpenAPI components."""
    return "".join(part.capitalize() for part in action.split("_")) + "Input"


def openapi_components() -> dict[str, dict[str, Any]]:
    """Node, Cluster and every action's input, for the OpenAPI document's components."""
    def embedded(schema: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in schema.items() if k != "$schema"}

    components = {"Node": embedded(node_schema()), "Cluster": embedded(cluster_schema())}
    for name, schema in all_schemas().items():
        components[component_name(name)] = embedded(schema)
    return components


def request_body(component: str, description: str) -> dict[str, Any]:
    """``openapi_extra`` giving a route's JSON body the schema of a component."""
    return {"requestBody": {"description": description, "content": {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{component}"}}}}}


def pre_check_body() -> dict[str, Any]:
    """``openapi_extra`` of ``POST /pre-check/{action}``: one of the actions' inputs."""
    refs = [{"$ref": f"#/components/schemas/{component_name(n)}"} for n in names()
            if n != STABILITY_CHECK]
    return {"requestBody": {
        "description": "What the action hands its policy: the schema named after the action "
                       "(e.g. AddNodeInput for add_node)",
        "content": {"application/json": {"schema": {"anyOf": refs}}}}}
