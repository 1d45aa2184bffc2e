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
