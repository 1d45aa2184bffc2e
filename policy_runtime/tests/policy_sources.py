"""Helpers that build policy source code for tests."""

from __future__ import annotations

import textwrap

_HEAD = """\
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.rule_id = rule_id
        self.settings = settings

    def eval(self, parameters, input_data, context):
"""


def eval_body(body: str, *, prelude: str = "") -> str:
    """A complete policy whose ``eval`` runs ``body`` (module-level ``prelude`` first)."""
    code = textwrap.indent(textwrap.dedent(body).strip("\n"), " " * 8)
    return textwrap.dedent(prelude).strip("\n") + "\n\n" + _HEAD + code + "\n"


ALLOW_ALL = eval_body('return {"allowed": True, "input_data": input_data}')
