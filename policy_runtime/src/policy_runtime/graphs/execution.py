"""``execute_graph``: a stored graph's policies, one decision each, in DAG order.

As upstream's policies system runs a graph: a node without incoming edges gets the
request's ``input_data``; a node with one source gets that source's result; a node with
several gets the list of their results, in the order of ``graph_connection_data``. The
graph's answer is the result of its one output node. Where upstream called a deployed
function per node, each node here is one evaluation of its policy through the runtime's
own path (the worker pool and sandbox, the policy's schemas, limits and context), as
``POST /execute_policy`` evaluates it, with the policy's default parameters. Nodes run
one after the other; the first that fails stops the graph and is named in the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from policy_runtime.evaluation import Outcome
from policy_runtime.graphs.dag import output_node, run_order, sources_of
from policy_runtime.graphs.errors import GraphBroken, NodeFailed
from policy_runtime.graphs.record import edges_of
from policy_runtime.service import PolicyNotFound

# One decision: (policy URI, input data) -> its outcome.
Evaluate = Callable[[str, Any], Awaitable[Outcome]]


def _input_of(node: str, edges: dict[str, list[str]], results: dict[str, Any],
              input_data: Any) -> Any:
    sources = sources_of(node, edges)
    if not sources:
        return input_data
    if len(sources) == 1:
        return results[sources[0]]
    return [results[source] for source in sources]


async def execute(graph: dict[str, Any], input_data: Any, evaluate: Evaluate) -> Any:
    """The graph's output; NodeFailed or GraphBroken name the node that stopped it."""
    uri = graph["graph_uri"]
    nodes = list(graph["graph_function_ids"])
    edges = edges_of(graph)
    order = run_order(nodes, edges)  # checked when stored; the order is recomputed here
    results: dict[str, Any] = {}
    for node in order:
        try:
            outcome = await evaluate(node, _input_of(node, edges, results, input_data))
        except PolicyNotFound:
            raise GraphBroken(
                f"graph {uri!r}: node {node!r} names a policy that is no longer published; "
                f"publish a new version (a deleted URI is never reused) and name it in the "
                f"graph with PUT /graphs/{uri}"
            ) from None
        if not outcome.ok:
            error = outcome.error or {}
            raise NodeFailed(
                f"graph {uri!r} stopped at node {node!r}: "
                f"{error.get('type')}: {error.get('message')}",
                outcome.error_type,
            )
        results[node] = outcome.result
    return results[output_node(nodes, edges)]
