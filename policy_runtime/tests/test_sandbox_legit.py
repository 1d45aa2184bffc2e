"""Legitimate policies keep working inside the sandbox."""

from __future__ import annotations

import pytest
from policy_sources import eval_body

from policy_runtime.evaluation import PolicyEvaluator

LEGIT = [
    ("comprehensions",
     "nodes = input_data['nodes']\n"
     "gpus = [g for n in nodes for g in n['gpus'] if g['memory'] >= 40]\n"
     "by_node = {n['id']: len(n['gpus']) for n in nodes}\n"
     "return {'gpus': len(gpus), 'by_node': by_node, 'ids': sorted({n['id'] for n in nodes})}",
     {"nodes": [{"id": "b", "gpus": [{"memory": 80}, {"memory": 24}]},
                {"id": "a", "gpus": [{"memory": 40}]}]},
     {"gpus": 2, "by_node": {"b": 2, "a": 1}, "ids": ["a", "b"]}),
    ("sorted-with-key-and-lambda",
     "return [n['id'] for n in sorted(input_data, key=lambda n: (-n['load'], n['id']))]",
     [{"id": "x", "load": 1}, {"id": "y", "load": 3}, {"id": "z", "load": 3}],
     ["y", "z", "x"]),
    ("fstrings-and-methods",
     "name = input_data['name']\nreturn f'{name.upper()}-{len(name):03d}-{3.14159:.2f}'",
     {"name": "gpu"}, "GPU-003-3.14"),
    ("try-except-and-raise",
     "try:\n    return int(input_data)\nexcept ValueError as exc:\n    return str(exc)[:7]",
     "nope", "invalid"),
    ("helper-methods-and-self-state",
     "self.seen = []\nfor item in input_data:\n    self.remember(item)\nreturn self.seen",
     [3, 1, 3], [3, 1]),
    ("math-statistics",
     "import math, statistics\n"
     "return {'mean': statistics.mean(input_data),"
     " 'ceil': math.ceil(statistics.pstdev(input_data)),"
     " 'median': statistics.median(input_data)}",
     [1, 2, 3, 4], {"mean": 2.5, "ceil": 2, "median": 2.5}),
    ("json-re",
     "import json, re\n"
     "doc = json.loads(input_data)\n"
     "return {'ok': bool(re.fullmatch(r'us-[a-z]+-\\d', doc['region'])), 'text': json.dumps(doc)}",
     '{"region": "us-west-2"}', {"ok": True, "text": '{"region": "us-west-2"}'}),
    ("collections",
     "import collections\n"
     "counts = collections.Counter(input_data)\n"
     "groups = collections.defaultdict(list)\n"
     "for word in input_data:\n    groups[word[0]].append(word)\n"
     "Point = collections.namedtuple('Point', 'x y')\n"
     "queue = collections.deque(maxlen=2)\nqueue.extend(input_data)\n"
     "return {'top': counts.most_common(1), 'groups': dict(groups), 'p': Point(1, 2).y,"
     " 'q': list(queue)}",
     ["aa", "ab", "aa", "b"],
     {"top": [["aa", 2]], "groups": {"a": ["aa", "ab", "aa"], "b": ["b"]}, "p": 2,
      "q": ["aa", "b"]}),
    ("datetime-decimal-fractions",
     "import datetime, decimal, fractions\n"
     "t = datetime.datetime.fromisoformat(input_data)\n"
     "later = t + datetime.timedelta(hours=30)\n"
     "return {'weekday': later.strftime('%A'), 'price': str(decimal.Decimal('0.10') * 3),"
     " 'ratio': str(fractions.Fraction(6, 4))}",
     "2026-11-21T12:00:00", {"weekday": "Sunday", "price": "0.30", "ratio": "3/2"}),
    ("functools-itertools-operator-heapq-bisect",
     "import functools, itertools, operator, heapq, bisect\n"
     "product = functools.reduce(operator.mul, input_data, 1)\n"
     "pairs = list(itertools.combinations(sorted(input_data), 2))[:2]\n"
     "smallest = heapq.nsmallest(2, input_data)\n"
     "return {'product': product, 'pairs': pairs, 'smallest': smallest,"
     " 'slot': bisect.bisect_left(sorted(input_data), 3),"
     " 'get': operator.itemgetter(0)(input_data)}",
     [4, 1, 3], {"product": 12, "pairs": [[1, 3], [1, 4]], "smallest": [1, 3], "slot": 1,
                 "get": 4}),
    ("own-classes-and-total_ordering",
     "import functools\n"
     "@functools.total_ordering\n"
     "class Node:\n"
     "    def __init__(self, name, load):\n"
     "        self.name = name\n        self.load = load\n"
     "    def __eq__(self, other):\n        return self.load == other.load\n"
     "    def __lt__(self, other):\n        return self.load < other.load\n"
     "nodes = [Node(n, l) for n, l in input_data.items()]\n"
     "return max(nodes).name if Node('a', 1) <= Node('b', 2) else None",
     {"a": 3, "b": 7, "c": 5}, "b"),
    ("generators-closures-unpacking",
     "def counter(start):\n    total = [start]\n"
     "    def add(n):\n        total[0] = total[0] + n\n        return total[0]\n    return add\n"
     "add = counter(10)\nfirst, *rest = input_data\n"
     "return {'sum': sum(x * x for x in input_data), 'acc': [add(x) for x in rest],"
     " 'first': first}",
     [1, 2, 3], {"sum": 14, "acc": [12, 15], "first": 1}),
    ("augmented-assignment-everywhere",
     "total = 0\nlabels = {}\nfor i, v in enumerate(input_data):\n"
     "    total += v\n    labels[str(i)] = labels.get(str(i), '') + 'x' * v\n"
     "self.total = total\nreturn [self.total, labels]",
     [1, 2], [3, {"0": "x", "1": "xx"}]),
    ("printing-is-collected",
     "print('debug', input_data)\nreturn printed.strip()", 5, "debug 5"),
    ("typing-annotations",
     "from typing import Optional, List\n"
     "def first(xs: List[int]) -> Optional[int]:\n    return xs[0] if xs else None\n"
     "return first(input_data)", [7], 7),
    # Builtin types are real types to isinstance/issubclass/subscription (issue 27).
    ("json-type-checks",
     "def kind(v):\n"
     "    if v is None:\n        return 'null'\n"
     "    if isinstance(v, bool):\n        return 'bool'\n"
     "    if isinstance(v, (int, float)):\n        return 'number'\n"
     "    if isinstance(v, str):\n        return 'string'\n"
     "    if isinstance(v, (list, tuple)):\n        return 'array'\n"
     "    if isinstance(v, dict):\n        return 'object'\n"
     "    return 'other'\n"
     "tags = set(input_data['l'])\nfrozen = frozenset(tags)\n"
     "checks = [isinstance(tags, set), isinstance(frozen, frozenset),"
     " isinstance(frozen, set), isinstance(tags, (set, frozenset)),"
     " isinstance(tuple(tags), tuple), isinstance(list(tags), tuple),"
     " isinstance(1.5, float), isinstance(1, float), isinstance(True, int)]\n"
     "subs = [issubclass(bool, int), issubclass(list, (tuple, list)), issubclass(list, list),"
     " issubclass(frozenset, set), issubclass(dict, dict), issubclass(tuple, list)]\n"
     "return {'kinds': {k: kind(v) for k, v in input_data.items()}, 'checks': checks,"
     " 'subs': subs}",
     {"n": 1, "x": 1.5, "b": True, "s": "a", "l": [1], "o": {}, "z": None},
     {"kinds": {"n": "number", "x": "number", "b": "bool", "s": "string", "l": "array",
                "o": "object", "z": "null"},
      "checks": [True, True, False, True, True, False, True, False, True],
      "subs": [True, True, True, False, True, False]}),
    ("generic-aliases-and-annotations",
     "def total(xs: list[int], weights: dict[str, float] | None = None) -> tuple[int, ...]:\n"
     "    ids: set[str] = set()\n"
     "    return (sum(xs), len(ids))\n"
     "class Limits:\n"
     "    names: list[str] = ['cpu']\n"
     "    caps: dict[str, int] = {}\n"
     "    note: str\n"
     "pairs: list[tuple[str, int]] = sorted(input_data.items())\n"
     "self.count: int = len(pairs)\n"
     "return {'total': total(list[int](input_data.values())), 'pairs': pairs,"
     " 'count': self.count, 'names': Limits.names,"
     " 'aliases': [str(list[int]), str(dict[str, int]), str(frozenset[str]), str(list | None)],"
     " 'union': [isinstance(None, list | None), isinstance([], list | dict),"
     " isinstance(1, list | None)]}",
     {"b": 2, "a": 1},
     {"total": [3, 0], "pairs": [["a", 1], ["b", 2]], "count": 2, "names": ["cpu"],
      "aliases": ["list[int]", "dict[str, int]", "frozenset[str]", "list | None"],
      "union": [True, True, False]}),
    # Policies are compiled with postponed annotations (PEP 563, inherited from
    # RestrictedPython's compile module): annotations are kept as strings, never run.
    ("annotations-are-postponed",
     "class Spec:\n    size: NotDefinedAnywhere = 1\n"
     "def f(a: AlsoNotDefined[int]) -> 'x':\n    return a\n"
     "return [f(Spec.size), isinstance(Spec.size, int)]",
     None, [1, True]),
    ("subclassing-builtin-types",
     "class Nodes(list):\n"
     "    def ids(self):\n        return sorted(n['id'] for n in self)\n"
     "class Pair(tuple[str, int]):\n"
     "    def label(self):\n        return self[0] + '=' + str(self[1])\n"
     "class Tags(set):\n    pass\n"
     "nodes = Nodes(input_data)\nnodes.append({'id': 'c'})\nnodes.source = 'input'\n"
     "nodes[0] = {'id': 'z'}\nNodes.kind = 'nodes'\n"
     "tags = Tags(['x'])\ntags.add('y')\n"
     "return {'ids': nodes.ids(), 'source': nodes.source, 'kind': Nodes.kind,"
     " 'checks': [isinstance(nodes, list), isinstance(nodes, Nodes), issubclass(Nodes, list),"
     " isinstance([], Nodes), isinstance(Pair(('a', 1)), tuple), isinstance(tags, set)],"
     " 'label': Pair(('a', 1)).label(), 'tags': sorted(tags), 'plain': list(nodes)[1:]}",
     [{"id": "a"}, {"id": "b"}],
     {"ids": ["b", "c", "z"], "source": "input", "kind": "nodes",
      "checks": [True, True, True, False, True, True], "label": "a=1", "tags": ["x", "y"],
      "plain": [{"id": "b"}, {"id": "c"}]}),
    ("iterator-types-and-unbound-methods",
     "e = enumerate(input_data)\nz = zip(input_data, input_data)\n"
     "m = map(str, input_data)\nf = filter(None, input_data)\n"
     "return {'types': [isinstance(e, enumerate), isinstance(z, zip), isinstance(m, map),"
     " isinstance(f, filter), isinstance(e, zip)],"
     " 'values': [list(e), list(z), list(m), list(f), list(reversed(input_data))],"
     " 'unbound': [dict.fromkeys(['a'], 0), sorted(set.union({1}, {2}, {3})),"
     " list.copy(input_data), str.join('-', ['a', 'b']), tuple.count((1, 1), 1)]}",
     [0, 2],
     {"types": [True, True, True, True, False],
      "values": [[[0, 0], [1, 2]], [[0, 0], [2, 2]], ["0", "2"], [2], [2, 0]],
      "unbound": [{"a": 0}, [1, 2, 3], [0, 2], "a-b", 2]}),
    ("getattr-on-data",
     "return [getattr(input_data, 'upper')(), hasattr(input_data, 'nope')]", "ab", ["AB", False]),
    ("context-and-rule-id",
     "return [context['policy_rule_uri'], self.rule_id]", None, ["p:v1-stable", "p:v1-stable"]),
]


@pytest.mark.parametrize(
    ("body", "input_data", "expected"),
    [pytest.param(body, data, expected, id=name) for name, body, data, expected in LEGIT],
)
def test_legitimate_policy_works(
    evaluator: PolicyEvaluator, body: str, input_data: object, expected: object
) -> None:
    helpers = (
        "\n    def remember(self, item):\n"
        "        if item not in self.seen:\n            self.seen.append(item)\n"
    )
    policy = {"code": eval_body(body) + helpers, "policy_rule_uri": "p:v1-stable"}
    outcome = evaluator.evaluate(policy, input_data)
    assert outcome.ok, outcome.error
    assert outcome.result == expected


def test_annotations_at_module_level_and_on_methods(evaluator: PolicyEvaluator) -> None:
    source = eval_body(
        "return self.check(input_data, LIMITS)",
        prelude="LIMITS: dict[str, int] = {'cpu': 4}\nNAMES: list[str]\n",
    ) + (
        "\n    def check(self, data: dict[str, list[int]], limits: dict[str, int]) -> bool:\n"
        "        values: list[int] = data['cpu']\n"
        "        return isinstance(values, list) and max(values) <= limits['cpu']\n"
    )
    outcome = evaluator.evaluate({"code": source}, {"cpu": [1, 4]})
    assert outcome.ok and outcome.result is True, outcome.error


def test_a_policy_subclass_leaves_the_shared_types_alone(evaluator: PolicyEvaluator) -> None:
    # A policy's own subclass of a builtin type may be changed like any policy class; the
    # type every policy sees stays as it was, in this policy and in the next ones.
    poison = eval_body(
        "class Nodes(list):\n    pass\n"
        "Nodes.append = None\nNodes.extra = 1\n"
        "xs = []\nxs.append(1)\nreturn [xs, Nodes.extra, isinstance(Nodes(), list)]"
    )
    outcome = evaluator.evaluate({"code": poison}, {})
    assert outcome.ok and outcome.result == [[1], 1, True], outcome.error
    check = eval_body("xs = list()\nxs.append(2)\nreturn [xs, hasattr(list, 'extra')]")
    for _ in range(4):  # reach both workers of the pool
        outcome = evaluator.evaluate({"code": check}, {})
        assert outcome.ok and outcome.result == [[2], False], outcome.error


def test_parameters_and_settings_are_merged_over_the_defaults(evaluator: PolicyEvaluator) -> None:
    policy = {
        "code": eval_body("return [parameters, self.settings]"),
        "policy_parameters": {"a": 1, "b": 2},
        "policy_settings": {"mode": "strict"},
    }
    outcome = evaluator.evaluate(policy, {}, parameters={"b": 3}, settings={"extra": True})
    assert outcome.result == [{"a": 1, "b": 3}, {"mode": "strict", "extra": True}]


def test_each_decision_gets_a_fresh_instance(evaluator: PolicyEvaluator) -> None:
    source = eval_body("self.calls = getattr(self, 'calls', 0) + 1\nreturn self.calls")
    results = {evaluator.evaluate({"code": source}, {}).result for _ in range(5)}
    assert results == {1}


def test_result_that_is_not_json_is_invalid_output(evaluator: PolicyEvaluator) -> None:
    outcome = evaluator.evaluate({"code": eval_body("return {1, 2}")}, {})
    assert outcome.error_type == "InvalidOutput"
    assert "not JSON" in outcome.error["message"]


def test_management_method(evaluator: PolicyEvaluator) -> None:
    source = eval_body("return 1") + (
        "\n    def management(self, action, data):\n"
        "        return {'action': action, 'data': data}\n"
    )
    outcome = evaluator.manage({"code": source}, "get_thresholds", {"x": 1})
    assert outcome.ok and outcome.result == {"action": "get_thresholds", "data": {"x": 1}}
    missing = evaluator.manage({"code": eval_body("return 1")}, "x", None)
    assert missing.error == {
        "type": "PolicyError",
        "message": "the policy does not define management(action, data)",
    }
