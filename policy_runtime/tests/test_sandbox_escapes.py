"""Adversarial policies: every known escape route must end in a typed error.

Each row is (id, eval body, expected error type, words the message must contain). The
vectors follow RestrictedPython's advisories and the classic Python sandbox escapes; all
run through the real worker pool, exactly as the service runs policies.
"""

from __future__ import annotations

import pytest
from policy_sources import eval_body

from policy_runtime.evaluation import PolicyEvaluator

COMPILE = "CompileError"
VIOLATION = "SandboxViolation"
POLICY = "PolicyError"

ESCAPES = [
    # CVE-2023-37271: frames reachable from generators, coroutines, tracebacks.
    ("gi_frame-f_back-f_globals",
     "g = (x for x in [1])\nreturn g.gi_frame.f_back.f_globals", COMPILE, "gi_frame"),
    ("gi_frame-through-getattr",
     "g = (x for x in [1])\nreturn str(getattr(g, 'gi_frame'))", VIOLATION, "gi_frame"),
    ("gi_code-through-getattr",
     "g = (x for x in [1])\nreturn str(getattr(g, 'gi' + '_code'))", VIOLATION, "gi_code"),
    ("generator-any-attribute",
     "g = (x for x in [1])\nreturn str(g.gi_running)", VIOLATION, "generator"),
    ("generator-function-frame",
     "def gen():\n    yield 1\nreturn str(getattr(gen(), 'gi_suspended'))", VIOLATION, "generator"),
    ("tb_frame", "try:\n    1/0\nexcept Exception as e:\n    return str(e.__traceback__.tb_frame)",
     COMPILE, "__traceback__"),
    ("cr_frame", "async def f():\n    pass\nreturn str(f().cr_frame)", COMPILE, "AsyncFunctionDef"),
    ("ag_frame", "async def f():\n    yield 1\nreturn str(f().ag_frame)", COMPILE,
     "AsyncFunctionDef"),
    # CVE-2023-41039, CVE-2026-76825: format strings resolve attributes outside the guards.
    ("str-format", "return '{0.__class__}'.format(1)", VIOLATION, "format"),
    ("str-format_map", "return '{x.__class__}'.format_map({'x': 1})", VIOLATION, "format_map"),
    ("format-via-getattr", "f = getattr('', 'format')\nreturn f('{0.__class__}', 1)",
     VIOLATION, "format"),
    ("format-unbound", "return str.format('{0.__class__}', 1)", VIOLATION, "format"),
    ("string-Formatter", "import string\nreturn string.Formatter().format('{0.__class__}', 1)",
     VIOLATION, "string"),
    ("format-builtin", "return format(1, 'x')", POLICY, "format"),
    # CVE-2024-47532: AttributeError.obj hands out the object the lookup failed on.
    ("AttributeError.obj", "try:\n    (1).nope\nexcept AttributeError as e:\n    return str(e.obj)",
     VIOLATION, "obj"),
    # CVE-2025-22153: try/except* confuses the type-guarded exception handling.
    ("except-star", "try:\n    1/0\nexcept* ZeroDivisionError:\n    return 1", COMPILE, "TryStar"),
    # RestrictedPython 8.3: positional-only parameters shadowing the guard names.
    ("posonly-_getattr_", "def f(_getattr_, /):\n    return _getattr_\nreturn f(getattr)",
     COMPILE, "_getattr_"),
    ("posonly-_write_", "def f(_write_=None, /):\n    return 1\nreturn f()", COMPILE, "_write_"),
    ("lambda-posonly", "f = lambda _getattr_, /: 1\nreturn f(1)", COMPILE, "_getattr_"),
    # Module attributes that are real modules in CPython 3.11.
    ("json.codecs", "import json\nreturn str(json.codecs)", POLICY, "json"),
    ("typing.sys", "import typing\nreturn str(typing.sys)", POLICY, "typing"),
    ("datetime.sys", "import datetime\nreturn str(datetime.sys)", POLICY, "datetime"),
    ("collections.sys", "import collections\nreturn str(collections.sys)", POLICY, "collections"),
    ("heapq-private", "import heapq\nreturn str(getattr(heapq, '_heapify_max'))", VIOLATION, "_"),
    ("statistics.random", "import statistics\nreturn str(statistics.random)", POLICY, "random"),
    ("from-json-import-decoder", "from json import decoder\nreturn str(decoder)", POLICY,
     "decoder"),
    ("from-json-import-codecs", "from json import codecs\nreturn str(codecs)", POLICY, "codecs"),
    ("import-submodule", "import json.decoder\nreturn 1", VIOLATION, "json.decoder"),
    ("import-from-submodule", "from json.decoder import scanstring\nreturn 1", VIOLATION,
     "json.decoder"),
    ("star-import", "from json import *\nreturn 1", COMPILE, "*"),
    ("module-dict", "import json\nreturn str(json.__dict__)", COMPILE, "__dict__"),
    ("module-members-slot", "import json\nreturn str(getattr(json, '_members'))", VIOLATION, "_"),
    ("copy-module-proxy", "import copy, json\nreturn str(copy.copy(json).codecs)", POLICY,
     "codecs"),
    ("typing.get_type_hints", "import typing\nreturn str(typing.get_type_hints)", POLICY, "typing"),
    ("decimal.getcontext", "import decimal\nreturn str(decimal.getcontext())", POLICY, "decimal"),
    # C functions that do attribute access or writes outside the guards.
    ("operator.attrgetter", "import operator\nreturn str(operator.attrgetter('__class__')(1))",
     POLICY, "attrgetter"),
    ("operator.methodcaller", "import operator\nreturn operator.methodcaller('format', 1)",
     POLICY, "methodcaller"),
    ("operator.setitem", "import operator\nreturn operator.setitem", POLICY, "setitem"),
    ("functools.reduce-getattr",
     "import functools\nreturn str(functools.reduce(getattr, ['__class__'], 1))",
     VIOLATION, "__class__"),
    ("functools.partial-getattr",
     "import functools\nreturn str(functools.partial(getattr, 1, '__class__')())",
     VIOLATION, "__class__"),
    ("map-getattr", "return str(list(map(getattr, [1], ['__class__'])))", VIOLATION, "__class__"),
    ("sorted-key-getattr", "return sorted([1], key=lambda x: getattr(x, '__class__'))",
     VIOLATION, "__class__"),
    ("total_ordering-foreign-class",
     "import functools, fractions\nfunctools.total_ordering(fractions.Fraction)\nreturn 1",
     VIOLATION, "total_ordering"),
    # The classic object-graph walk.
    ("subclasses", "return str(().__class__.__base__.__subclasses__())", COMPILE, "_"),
    ("getattr-dunder", "return str(getattr((), '__class__'))", VIOLATION, "__class__"),
    ("getattr-computed-dunder", "n = '_' * 2 + 'class' + '_' * 2\nreturn str(getattr(1, n))",
     VIOLATION, "__class__"),
    ("hasattr-dunder", "return hasattr(1, '__class__')", VIOLATION, "__class__"),
    ("mro", "return str(getattr(int, 'mro')())", VIOLATION, "mro"),
    ("str-subclass-name",
     "class S(str):\n    def startswith(self, *a):\n        return False\n"
     "return str(getattr(1, S('__class__')))", VIOLATION, "plain strings"),
    ("function-globals", "def f():\n    pass\nreturn str(f.__globals__)", COMPILE, "__globals__"),
    ("fstring-dunder", "x = 1\nreturn f'{x.__class__}'", COMPILE, "__class__"),
    # Builtins that do not exist in policies.
    ("type", "return str(type(1))", POLICY, "type"),
    ("open", "return open('/etc/passwd').read()", POLICY, "open"),
    ("eval", "return eval('1')", COMPILE, "Eval"),
    ("exec", "exec('x = 1')\nreturn 1", COMPILE, "Exec"),
    ("compile", "return str(compile('1', 'x', 'eval'))", POLICY, "compile"),
    ("globals", "return str(globals())", POLICY, "globals"),
    ("vars", "return str(vars())", POLICY, "vars"),
    ("dir", "return dir()", POLICY, "dir"),
    ("__import__", "return str(__import__('os'))", COMPILE, "__import__"),
    ("import-os", "import os\nreturn 1", VIOLATION, "'os'"),
    ("import-sys", "import sys\nreturn 1", VIOLATION, "'sys'"),
    ("import-preloaded-time", "import time\nreturn 1", VIOLATION, "'time'"),
    ("from-preloaded-time", "from time import sleep\nreturn 1", VIOLATION, "'time'"),
    ("import-builtins", "import builtins\nreturn 1", COMPILE, "builtins"),
    ("SystemExit", "raise SystemExit(0)", POLICY, "SystemExit"),
    ("KeyboardInterrupt", "raise KeyboardInterrupt", POLICY, "KeyboardInterrupt"),
    ("catch-BaseException", "try:\n    1/0\nexcept BaseException:\n    return 1",
     POLICY, "BaseException"),
    # Writes to shared objects would poison later policies in the same worker.
    ("write-module", "import math\nmath.pi = 3\nreturn math.pi", VIOLATION, "modified"),
    ("setattr-module", "import json\nsetattr(json, 'loads', 1)\nreturn 1", VIOLATION, "modified"),
    ("write-builtin-class", "int.real = 3\nreturn 1", VIOLATION, "modified"),
    ("write-module-class", "import fractions\nfractions.Fraction.limit_denominator = 1\nreturn 1",
     VIOLATION, "modified"),
    ("delattr-module-class", "import collections\ndelattr(collections.Counter, 'most_common')\n"
     "return 1", VIOLATION, "modified"),
    # The builtin types policies see (list, tuple, set, frozenset, zip, map, filter,
    # enumerate, reversed) are stand-ins for the real types: nothing on them leads to the
    # real type, its metaclass or its namespace, and none of them can be changed.
    ("stand-in-__class__", "return str(list.__class__)", COMPILE, "__class__"),
    ("stand-in-getattr-__class__", "return str(getattr(list, '__class__'))", VIOLATION,
     "__class__"),
    ("stand-in-__base__", "return str(getattr(tuple, '__base__'))", VIOLATION, "__base__"),
    ("stand-in-__mro__", "return str(getattr(set, '__mro__'))", VIOLATION, "__mro__"),
    ("stand-in-mro", "return str(list.mro())", VIOLATION, "mro"),
    ("stand-in-__dict__", "return str(getattr(frozenset, '__dict__'))", VIOLATION, "__dict__"),
    ("stand-in-__subclasses__", "return str(getattr(list, '__subclasses__')())", VIOLATION,
     "__subclasses__"),
    ("stand-in-__new__", "return str(list.__new__(list))", COMPILE, "__new__"),
    ("stand-in-__call__", "return str(getattr(zip, '__call__'))", VIOLATION, "__call__"),
    ("stand-in-__instancecheck__", "return str(getattr(list, '__instancecheck__'))",
     VIOLATION, "__instancecheck__"),
    ("generic-alias-__origin__", "return str(getattr(list[int], '__origin__'))", VIOLATION,
     "__origin__"),
    ("generic-alias-mro", "return str(list[int].mro())", VIOLATION, "mro"),
    ("union-__args__", "return str(getattr(list | None, '__args__'))", VIOLATION, "__args__"),
    ("policy-subclass-__bases__", "class X(list):\n    pass\nreturn str(getattr(X, '__bases__'))",
     VIOLATION, "__bases__"),
    ("policy-subclass-mro", "class X(tuple):\n    pass\nreturn str(X.mro())", VIOLATION, "mro"),
    ("policy-subclass-instance-__class__", "class X(list):\n    pass\nreturn str(X().__class__)",
     COMPILE, "__class__"),
    ("policy-subclass-metaclass", "class X(list, metaclass=list):\n    pass\nreturn 1", COMPILE,
     "metaclass"),
    ("write-stand-in", "list.append = None\nreturn 1", VIOLATION, "modified"),
    ("setattr-stand-in", "setattr(tuple, 'count', None)\nreturn 1", VIOLATION, "modified"),
    ("delattr-stand-in", "delattr(set, 'add')\nreturn 1", VIOLATION, "modified"),
    ("total_ordering-stand-in", "import functools\nfunctools.total_ordering(list)\nreturn 1",
     VIOLATION, "total_ordering"),
    ("unbound-method-on-module", "import json\nlist.append(json, 1)\nreturn 1", POLICY,
     "append"),
    ("unbound-method-on-stand-in", "set.add(set, 1)\nreturn 1", POLICY, "add"),
    ("unbound-method-on-module-dict", "import json\ndict.update(json, {})\nreturn 1", POLICY,
     "update"),
    # Annotated assignments get the checks of plain assignments and expressions.
    ("annassign-guard-name", "_getattr_: int = getattr\nreturn 1", COMPILE, "_getattr_"),
    ("annassign-dunder-attribute", "self.__dict__: dict = {}\nreturn 1", COMPILE, "__dict__"),
    ("annassign-write-module", "import math\nmath.pi: float = 3\nreturn 1", VIOLATION,
     "modified"),
    ("annassign-write-stand-in", "list.append: int = 1\nreturn 1", VIOLATION, "modified"),
    ("annassign-value-is-guarded",
     "class C:\n    x: int = getattr(1, '__class__')\nreturn 1", VIOLATION, "__class__"),
    ("annassign-annotations-namespace", "x: int = 1\nreturn str(__annotations__)", COMPILE,
     "__annotations__"),
    # Hiding a violation does not help: the first one decides the outcome.
    ("bare-except-swallows-violation",
     "try:\n    getattr(1, '__class__')\nexcept:\n    pass\nreturn {'allowed': True}",
     VIOLATION, "__class__"),
    ("violation-then-other-error",
     "try:\n    getattr(1, '__class__')\nexcept:\n    raise ValueError('hide')", VIOLATION,
     "__class__"),
]


@pytest.mark.parametrize(
    ("body", "error_type", "needle"),
    [pytest.param(body, error, needle, id=name) for name, body, error, needle in ESCAPES],
)
def test_escape_is_stopped_with_typed_error(
    evaluator: PolicyEvaluator, body: str, error_type: str, needle: str
) -> None:
    outcome = evaluator.evaluate({"code": eval_body(body)}, {})
    assert not outcome.ok, f"the escape succeeded: {outcome.result!r}"
    assert outcome.error["type"] == error_type, outcome.error
    assert needle in outcome.error["message"], outcome.error
    assert "Traceback" not in outcome.error["message"]


@pytest.mark.parametrize(
    "prelude",
    [
        pytest.param("import os", id="module-level-import"),
        pytest.param("x = getattr(1, '__class__')", id="module-level-violation"),
        pytest.param("try:\n    getattr(1, '__class__')\nexcept:\n    pass", id="module-hidden"),
    ],
)
def test_module_level_escape_fails_at_load(evaluator: PolicyEvaluator, prelude: str) -> None:
    outcome = evaluator.evaluate({"code": eval_body("return 1", prelude=prelude)}, {})
    assert outcome.error_type == VIOLATION, outcome.error


@pytest.mark.parametrize(
    ("prelude", "needle"),
    [
        pytest.param("return 1", "Line 1: SyntaxError: 'return' outside function",
                     id="module-level-return"),
        pytest.param("x = 1\nwhile x:\n    x = 0\nbreak",
                     "Line 4: SyntaxError: 'break' outside loop", id="break-outside-loop"),
        pytest.param("def f(a, a):\n    pass", "Line 1: SyntaxError: duplicate argument",
                     id="duplicate-argument"),
    ],
)
def test_errors_found_only_by_the_final_compile_are_compile_errors(
    evaluator: PolicyEvaluator, prelude: str, needle: str
) -> None:
    # These pass RestrictedPython's checks and fail in compile(): the worker must answer
    # with a CompileError naming the line, not die.
    outcome = evaluator.evaluate({"code": eval_body("return 1", prelude=prelude)}, {})
    assert outcome.error_type == COMPILE, outcome.error
    assert needle in outcome.error["message"], outcome.error


def test_violation_reports_the_policy_line(evaluator: PolicyEvaluator) -> None:
    source = eval_body("x = 1\ny = 2\nreturn getattr(x, '__class__')")
    outcome = evaluator.evaluate({"code": source}, {})
    line = source.splitlines().index("        return getattr(x, '__class__')") + 1
    assert outcome.error["message"].endswith(f"(line {line})"), outcome.error


def test_print_never_reaches_the_protocol(evaluator: PolicyEvaluator) -> None:
    body = "print('x' * 100000)\nreturn {'allowed': True}"
    outcome = evaluator.evaluate({"code": eval_body(body)}, {})
    assert outcome.ok and outcome.result == {"allowed": True}


def test_one_policy_cannot_change_what_the_next_one_sees(evaluator: PolicyEvaluator) -> None:
    poison = eval_body(
        "import collections\n"
        "try:\n    collections.Counter.most_common = None\nexcept Exception:\n    pass\n"
        "return 1"
    )
    check = eval_body(
        "import collections\nreturn collections.Counter('aab').most_common(1)"
    )
    assert evaluator.evaluate({"code": poison}, {}).error_type == VIOLATION
    for _ in range(4):  # reach both workers of the pool
        outcome = evaluator.evaluate({"code": check}, {})
        assert outcome.ok and outcome.result == [["a", 2]], outcome
