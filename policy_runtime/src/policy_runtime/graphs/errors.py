"""What can go wrong with a graph, each with the HTTP status its routes answer."""

from __future__ import annotations


class GraphError(Exception):
    """Base of the graph errors; ``status`` is the HTTP status of the answer."""

    status = 500


class InvalidGraph(GraphError):
    """The graph record cannot be stored (a cycle, a node naming no published policy,
    a malformed field); the message names the field and the fix."""

    status = 422


class GraphNotFound(GraphError):
    """No graph is stored under the URI."""

    status = 404


class GraphConflict(GraphError):
    """Another graph is stored under the URI, or the record names another URI."""

    status = 409


class GraphBroken(GraphError):
    """A stored graph cannot run any more: a policy one of its nodes names was deleted."""

    status = 409


class BadGraphRequest(GraphError):
    """The execute request lacks what it needs (``graph_uri``, ``input_data``)."""

    status = 400


class NodeFailed(GraphError):
    """One node's policy failed; the graph stopped there. ``error_type`` is the
    evaluation's (``Timeout``, ``PolicyError``...): the route answers the status
    ``/execute_policy`` answers for it."""

    status = 422

    def __init__(self, message: str, error_type: str | None) -> None:
        super().__init__(message)
        self.error_type = error_type
