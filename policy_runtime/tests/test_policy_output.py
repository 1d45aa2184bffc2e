"""What a policy prints comes back with its decision, bounded, never shared between calls;
a result that is not JSON is refused naming the key path to what is not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from policy_sources import eval_body

from policy_runtime.evaluation import PolicyEvaluator
from policy_runtime.sandbox.capture import MAX_PRINTED_CHARS


def policy(code: str, uri: str = "output-test:v1-stable") -> dict:
    return {"code": code, "policy_rule_uri": uri}


def aios_policy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "policy_runtime", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_printed_output_comes_back_with_the_result(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        print("checking", input_data["n"])
        print("a", "b", sep="-", end="!\\n", flush=True)
        return {"allowed": True}
        """
    )
    outcome = evaluator.evaluate(policy(code), {"n": 3})
    assert outcome.ok, outcome.error
    assert outcome.printed == "checking 3\na-b!\n"
    assert outcome.to_dict(with_output=True)["printed"] == "checking 3\na-b!\n"
    assert "printed" not in outcome.to_dict()


def test_printed_output_comes_back_with_an_error(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        print("about to fail")
        raise ValueError("nope")
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert not outcome.ok and outcome.error_type == "PolicyError"
    assert outcome.printed == "about to fail\n"


def test_printed_output_of_a_result_failing_its_schema_is_kept(
    evaluator: PolicyEvaluator,
) -> None:
    document = policy(eval_body('print("made 1")\nreturn 1'))
    document["policy_output_schema"] = {"type": "string"}
    outcome = evaluator.evaluate(document, None)
    assert outcome.error_type == "InvalidOutput"
    assert outcome.printed == "made 1\n"


def test_printed_in_a_function_still_reads_its_own_output(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        def report(x):
            print("x is", x)
            return printed
        return report(5)
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert outcome.result == "x is 5\n"
    assert outcome.printed == "x is 5\n"


def test_printed_output_is_bounded(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        for i in range(10000):
            print("0123456789" * 10)
        return "done"
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert outcome.result == "done"
    assert outcome.printed.startswith("0123456789")
    kept, marker = outcome.printed[:MAX_PRINTED_CHARS], outcome.printed[MAX_PRINTED_CHARS:]
    assert len(kept) == MAX_PRINTED_CHARS
    assert "output truncated" in marker and len(marker) < 200


def test_output_never_reaches_another_call(evaluator: PolicyEvaluator) -> None:
    noisy = policy(eval_body('print("secret of the first policy")\nreturn 1'), "noisy:v1-a")
    quiet = policy(eval_body("return 2"), "quiet:v1-a")
    failing = policy(eval_body('print("secret")\nraise ValueError("x")'), "failing:v1-a")
    for _ in range(3):  # both workers of the pool serve each policy
        assert evaluator.evaluate(noisy, None).printed == "secret of the first policy\n"
        assert evaluator.evaluate(failing, None).printed == "secret\n"
        later = evaluator.evaluate(quiet, None)
        assert later.result == 2 and later.printed == "" and later.logs == []


def test_print_to_a_file_object_stays_with_that_object(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        class Sink:
            def __init__(self):
                self.parts = []
            def write(self, text):
                self.parts.append(text)
        sink = Sink()
        print("to the sink", file=sink)
        return "".join(sink.parts)
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert outcome.result == "to the sink\n"
    assert outcome.printed == ""


def test_printed_text_that_is_not_utf8_is_escaped(evaluator: PolicyEvaluator) -> None:
    code = eval_body('print("lone \\ud800 surrogate")\nreturn 1')
    outcome = evaluator.evaluate(policy(code), None)
    assert outcome.ok, outcome.error
    assert outcome.printed == "lone \\ud800 surrogate\n"


def test_a_str_subclass_printed_is_captured_as_plain_text(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        class Loud(str):
            def upper(self):
                return "changed"
        print(Loud("thing"))
        return 1
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert outcome.ok, outcome.error
    assert outcome.printed == "thing\n"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (
            "import datetime\nreturn {'details': [1, 2, {'when': datetime.datetime(2024, 1, 1)}]}",
            'result["details"][2]["when"]: datetime is not JSON',
        ),
        ("return [1, {'a': {1, 2}}]", 'result[1]["a"]: set is not JSON'),
        (
            "import decimal\nreturn {'x': decimal.Decimal('1.5')}",
            'result["x"]: Decimal is not JSON',
        ),
        ("return {'k': {(1, 2): 3}}", 'result["k"][<tuple>]: a key of type tuple is not JSON'),
        ("return {'n': float('nan') * 1.0, 'm': [float('inf')]}", "result"),
    ],
)
def test_a_result_that_is_not_json_names_the_key_path(
    evaluator: PolicyEvaluator, body: str, path: str
) -> None:
    outcome = evaluator.evaluate(policy(eval_body(body)), None)
    assert outcome.error_type == "InvalidOutput", outcome
    assert path in outcome.error["message"]


def test_a_dict_subclass_result_key_path(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        class Ordered(dict):
            pass
        d = Ordered()
        d["when"] = range(3)
        return {"items": [d]}
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert outcome.error_type == "InvalidOutput"
    assert 'result["items"][0]["when"]: range is not JSON' in outcome.error["message"]


# -- the CLI ------------------------------------------------------------------------------

NOISY = eval_body(
    """
    import logging
    print("input was", input_data)
    logging.getLogger(__name__).warning("threshold %d", 3)
    return input_data * 2
    """
)


def test_eval_print_adds_printed_and_logs(tmp_path: Path) -> None:
    source = tmp_path / "p.py"
    source.write_text(NOISY)
    data = tmp_path / "in.json"
    data.write_text("21")
    done = aios_policy("eval", str(source), "--input", str(data), "--print")
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    out = json.loads(line)
    assert out["result"] == 42
    assert out["printed"] == "input was 21\n"
    assert out["logs"] == [{"level": "WARNING", "logger": "policy", "message": "threshold 3"}]

    plain = aios_policy("eval", str(source), "--input", str(data))
    assert plain.returncode == 0, plain.stderr
    assert set(json.loads(plain.stdout)) == {"ok", "result", "duration_ms"}


def test_eval_print_shows_output_of_a_failing_policy(tmp_path: Path) -> None:
    source = tmp_path / "p.py"
    source.write_text(eval_body('print("before")\nraise KeyError("k")'))
    done = aios_policy("eval", str(source), "--print")
    assert done.returncode == 1
    out = json.loads(done.stdout)
    assert out["ok"] is False and out["error"]["type"] == "PolicyError"
    assert out["printed"] == "before\n"


def test_test_shows_what_a_failing_case_printed(tmp_path: Path) -> None:
    (tmp_path / "policy.py").write_text(NOISY)
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "a_good.json").write_text('{"input_data": 2, "expected": 4}')
    (cases / "b_wrong.json").write_text('{"input_data": 2, "expected": 5}')
    done = aios_policy("test", str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "PASS cases/a_good.json",
        "FAIL cases/b_wrong.json: result differs from expected:",
        "  result: expected 5, got 4",
        "  printed:",
        "    input was 2",
        "  log WARNING policy: threshold 3",
        "1 passed, 1 failed",
    ]


def test_a_short_uri_names_the_published_release(api, unique_name: str) -> None:
    body = {"name": unique_name, "version": "v1", "release_tag": "stable", "code": NOISY}
    assert api.post("/policies", json=body).status_code == 201
    short = api.post(f"/policies/{unique_name}:v1/eval", json={"input_data": 1})
    assert short.status_code == 404
    assert f"'{unique_name}:v1-stable'" in short.text
    full = api.post(f"/policies/{unique_name}:v1-stable/eval", json={"input_data": 1})
    assert full.status_code == 200 and full.json()["result"] == 2
