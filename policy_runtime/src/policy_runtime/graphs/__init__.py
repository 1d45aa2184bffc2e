"""Graphs of policies: upstream AIOS's graphs registry and ``execute_graph``, in the sandbox."""
