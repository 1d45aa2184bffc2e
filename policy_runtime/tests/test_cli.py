"""``aios-policy`` as users run it: a real process, one JSON object on stdout."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLE_DIRS, EXAMPLES_DIR, REPO_ROOT
from policy_sources import ALLOW_ALL, eval_body


def aios_policy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "policy_runtime", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def single_json(stdout: str) -> dict:
    lines = stdout.splitlines()
    assert len(lines) == 1, f"expected exactly one line of JSON, got {stdout!r}"
    return json.loads(lines[0])


@pytest.fixture()
def write(tmp_path: Path):
    def _write(name: str, text: str) -> str:
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return _write


def test_eval_ok(write) -> None:
    policy = write("p.py", eval_body("return {'allowed': input_data['n'] > parameters['min']}"))
    data = write("in.json", '{"n": 3}')
    done = aios_policy("eval", policy, "--input", data, "--parameters", '{"min": 1}')
    assert done.returncode == 0, done.stderr
    out = single_json(done.stdout)
    assert out["ok"] is True and out["result"] == {"allowed": True}
    assert isinstance(out["duration_ms"], float)


@pytest.mark.parametrize(
    ("source", "extra", "error_type"),
    [
        ("def x(:\n", [], "CompileError"),
        (eval_body("return getattr(1, '__class__')"), [], "SandboxViolation"),
        (eval_body("while True:\n    pass"), ["--timeout", "0.3"], "Timeout"),
        (eval_body("return len('a' * 1024**3)"), ["--memory-mb", "64"], "MemoryLimit"),
        (eval_body("raise ValueError('nope')"), [], "PolicyError"),
        ("class AIOSv1PolicyRule:\n    pass\n", [], "InvalidPolicy"),
        (ALLOW_ALL, ["--parameters", "[1]"], "InvalidInput"),
        (ALLOW_ALL, ["--settings", "{oops"], "InvalidInput"),
        (eval_body("return object"), [], "PolicyError"),
        (eval_body("return {1}"), [], "InvalidOutput"),
    ],
)
def test_eval_failure_is_one_typed_json_object(
    write, source: str, extra: list[str], error_type: str
) -> None:
    done = aios_policy("eval", write("p.py", source), *extra)
    assert done.returncode == 1
    out = single_json(done.stdout)
    assert out["ok"] is False and out["error"]["type"] == error_type, out
    assert "Traceback" not in done.stdout + done.stderr


def test_eval_missing_files_are_reported(tmp_path: Path, write) -> None:
    done = aios_policy("eval", str(tmp_path / "absent.py"))
    out = single_json(done.stdout)
    assert done.returncode == 1 and out["error"]["type"] == "InvalidInput"
    assert "absent.py" in out["error"]["message"]
    policy = write("p.py", ALLOW_ALL)
    bad_input = write("in.json", "{not json")
    out = single_json(aios_policy("eval", policy, "--input", bad_input).stdout)
    assert out["error"]["type"] == "InvalidInput" and "in.json" in out["error"]["message"]


def test_eval_policy_directory_uses_its_metadata() -> None:
    directory = EXAMPLES_DIR / "scale-block-cap"
    case = json.loads((directory / "cases" / "rewritten_to_cap.json").read_text())
    done = subprocess.run(
        [sys.executable, "-m", "policy_runtime", "eval", str(directory), "--input", "/dev/stdin"],
        input=json.dumps(case["input_data"]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert single_json(done.stdout)["result"] == case["expected"]


def test_check(write) -> None:
    ok = aios_policy("check", write("ok.py", ALLOW_ALL))
    assert ok.returncode == 0
    assert single_json(ok.stdout) == {
        "ok": True,
        "result": {"contract": "AIOSv1PolicyRule", "management": False},
    }
    bad = aios_policy("check", write("bad.py", "class AIOSv1PolicyRule:\n    pass\n"))
    assert bad.returncode == 1
    assert single_json(bad.stdout)["error"]["type"] == "InvalidPolicy"


@pytest.mark.parametrize("directory", EXAMPLE_DIRS, ids=lambda p: p.name)
def test_example_policy_cases_pass(directory: Path) -> None:
    done = aios_policy("test", str(directory))
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    cases = list((directory / "cases").glob("*.json"))
    assert len(cases) >= 3
    assert lines[-1] == f"{len(cases)} passed, 0 failed"
    assert all(line.startswith("PASS ") for line in lines[:-1])


def test_test_reports_failing_cases(tmp_path: Path) -> None:
    (tmp_path / "policy.py").write_text(eval_body("return input_data * 2"))
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "a_good.json").write_text('{"input_data": 2, "expected": 4}')
    (cases / "b_wrong.json").write_text('{"input_data": 2, "expected": 5}')
    (cases / "c_error.json").write_text('{"input_data": null, "expected_error": "PolicyError"}')
    (cases / "d_broken.json").write_text('{"input_data": 1}')
    done = aios_policy("test", str(tmp_path))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "PASS cases/a_good.json",
        "FAIL cases/b_wrong.json: result differs from expected:",
        "  result: expected 5, got 4",
        "PASS cases/c_error.json",
        'FAIL cases/d_broken.json: a case must be a JSON object with exactly one of "expected" '
        'or "expected_error"',
        "2 passed, 2 failed",
    ]


def test_test_without_cases_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "policy.py").write_text(ALLOW_ALL)
    done = aios_policy("test", str(tmp_path))
    assert done.returncode == 1 and "has no cases/*.json" in done.stderr


def test_usage_errors_go_to_stderr() -> None:
    done = aios_policy("eval")
    assert done.returncode == 2 and done.stdout == "" and "POLICY_FILE" in done.stderr


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from policy_runtime.cli import build_parser

    parser = build_parser()
    (subparsers,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(subparsers.choices)


@pytest.mark.parametrize("doc", ["policy_runtime/README.md", "docs/policy-author-guide.md"])
def test_documented_usage_names_every_option(doc: str) -> None:
    """Each documented ``aios-policy <command>`` line names every option the command takes."""
    text = (REPO_ROOT / doc).read_text()
    shown = dict(re.findall(r"^aios-policy (\w+) (.*)$", text, re.M))
    assert {"eval", "check", "test"} <= set(shown), doc
    for command, usage in shown.items():
        sub = _subcommands()[command]
        flags = {option for action in sub._actions for option in action.option_strings
                 if option.startswith("--") and option != "--help"}
        missing = {flag for flag in flags if not re.search(rf"(\[|\| ){flag}\b", usage)}
        assert not missing, f"{doc}: aios-policy {command} does not show {sorted(missing)}"


def test_check_says_what_it_runs() -> None:
    done = aios_policy("--help")
    assert done.returncode == 0
    assert "every static check publishing runs" in " ".join(done.stdout.split())
    assert "compile a policy and check its contract" not in done.stdout
    assert _subcommands()["check"].description.startswith(
        "run every static check publishing runs")
