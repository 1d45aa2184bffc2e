"""The shape of a graph: its nodes, its edges, the order they run in.

A graph is ``graph_function_ids`` (the nodes, in order) and ``graph_connection_data``
(``{source: [targets]}``). Upstream's policies system runs it as a DAG: nodes without
incoming edges first, in the order of ``graph_function_ids``, each node once all its
sources have run, and the one node without outgoing edges gives the graph's output.
Everything that would make such a run impossible (a cycle, an edge to an unknown node,
no single output node) is refused here, when the graph is stored, rather than on its
first execution as upstream did.
"""

from __future__ import annotations

from collections import deque

from policy_runtime.graphs.errors import InvalidGraph

Edges = dict[str, list[str]]


def _check_edges(nodes: list[str], edges: Edges) -> None:
    known = set(nodes)
    for source, targets in edges.items():
        if source not in known:
            raise InvalidGraph(
                f"graph_connection_data: source {source!r} is not one of graph_function_ids; "
                "add it there or remove its edges"
            )
        seen: set[str] = set()
        for target in targets:
            if target not in known:
                raise InvalidGraph(
                    f"graph_connection_data[{source!r}]: target {target!r} is not one of "
                    "graph_function_ids; add it there or remove the edge"
                )
            if target in seen:
                raise InvalidGraph(
                    f"graph_connection_data[{source!r}]: target {target!r} is listed twice"
                )
            seen.add(target)


def _cycle(nodes: list[str], edges: Edges) -> list[str] | None:
    """One cycle of the graph (its nodes, the first repeated at the end), or None."""
    colour = dict.fromkeys(nodes, 0)  # 0 unvisited, 1 on the current path, 2 done
    for start in nodes:
        if colour[start]:
            continue
        path: list[str] = []
        stack = [(start, iter(edges.get(start, ())))]
        colour[start] = 1
        path.append(start)
        while stack:
            node, targets = stack[-1]
            target = next(targets, None)
            if target is None:
                stack.pop()
                path.pop()
                colour[node] = 2
            elif colour[target] == 1:
                return [*path[path.index(target):], target]
            elif colour[target] == 0:
                colour[target] = 1
                path.append(target)
                stack.append((target, iter(edges.get(target, ()))))
    return None


def sources_of(node: str, edges: Edges) -> list[str]:
    """The nodes whose output ``node`` takes, in the order of ``graph_connection_data``."""
    return [source for source, targets in edges.items() if node in targets]


def output_node(nodes: list[str], edges: Edges) -> str:
    """The one node without outgoing edges: its result is the graph's."""
    leaves = [node for node in nodes if not edges.get(node)]
    if len(leaves) != 1:
        raise InvalidGraph(
            f"a graph must end in exactly one node (one without outgoing edges, whose result "
            f"is the graph's output); this one ends in {len(leaves)}: "
            + ", ".join(repr(leaf) for leaf in leaves[:10])
        )
    return leaves[0]


def run_order(nodes: list[str], edges: Edges) -> list[str]:
    """The order upstream runs the nodes in: a breadth-first topological order whose
    roots come in the order of ``graph_function_ids``. InvalidGraph names what makes the
    graph no DAG with one output."""
    if len(set(nodes)) != len(nodes):
        twice = next(node for node in nodes if nodes.count(node) > 1)
        raise InvalidGraph(f"graph_function_ids: {twice!r} is listed twice")
    _check_edges(nodes, edges)
    cycle = _cycle(nodes, edges)
    if cycle is not None:
        raise InvalidGraph(
            "graph_connection_data has a cycle ("
            + " -> ".join(cycle)
            + "); a graph must be acyclic: remove one of these edges"
        )
    output_node(nodes, edges)
    waiting = dict.fromkeys(nodes, 0)
    for targets in edges.values():
        for target in targets:
            waiting[target] += 1
    ready = deque(node for node in nodes if waiting[node] == 0)
    order = []
    while ready:
        node = ready.popleft()
        order.append(node)
        for target in edges.get(node, ()):
            waiting[target] -= 1
            if waiting[target] == 0:
                ready.append(target)
    return order
