"""What a policy author meets: ``check`` and ``test`` catch what publishing and the
governing service would refuse, and test cases are easy to write and read."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from policy_sources import ALLOW_ALL, eval_body
from test_api import publish
from test_cli import aios_policy, single_json


def policy_dir(tmp_path: Path, code: str, cases: dict[str, dict] | None = None,
               **metadata: object) -> Path:
    (tmp_path / "policy.py").write_text(code)
    (tmp_path / "policy.json").write_text(json.dumps(
        {"name": "author.test", "version": "v1", "release_tag": "stable", **metadata}
    ))
    (tmp_path / "cases").mkdir()
    for name, case in (cases or {}).items():
        (tmp_path / "cases" / f"{name}.json").write_text(json.dumps(case))
    return tmp_path


TYPO_SCHEMA = {"type": "object", "properties": {"min_gpus": {"type": "integr"}}}
BAD_DEFAULTS = {
    "policy_parameters": {"min_gpus": "two"},
    "policy_parameters_schema": {"type": "object",
                                 "properties": {"min_gpus": {"type": "integer"}}},
}


# -- 4. check runs what publishing runs ---------------------------------------------------
def test_check_refuses_a_schema_typo_as_publishing_does(tmp_path: Path) -> None:
    directory = policy_dir(tmp_path, ALLOW_ALL, policy_parameters_schema=TYPO_SCHEMA)
    done = aios_policy("check", str(directory))
    assert done.returncode == 1
    error = single_json(done.stdout)["error"]
    assert error["type"] == "InvalidPolicy"
    assert "policy_parameters_schema is not a valid JSON Schema" in error["message"]


def test_test_reports_a_schema_typo_without_a_traceback(tmp_path: Path) -> None:
    directory = policy_dir(tmp_path, ALLOW_ALL, {"a": {"input_data": {}, "expected": {}}},
                           policy_parameters_schema=TYPO_SCHEMA)
    done = aios_policy("test", str(directory))
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert "InvalidPolicy: policy_parameters_schema is not a valid JSON Schema" in done.stderr


def test_check_refuses_defaults_that_fail_their_schema(tmp_path: Path) -> None:
    done = aios_policy("check", str(policy_dir(tmp_path, ALLOW_ALL, **BAD_DEFAULTS)))
    assert done.returncode == 1
    error = single_json(done.stdout)["error"]
    assert error["type"] == "InvalidPolicy"
    assert error["message"].startswith("policy_parameters.min_gpus (a default) does not match")


def test_check_accepts_defaults_that_leave_a_required_key_to_the_caller(
    tmp_path: Path,
) -> None:
    schema = {"type": "object", "required": ["zone"], "properties": {"zone": {"type": "string"}}}
    directory = policy_dir(tmp_path, ALLOW_ALL, policy_parameters_schema=schema)
    assert aios_policy("check", str(directory)).returncode == 0


def test_publishing_refuses_defaults_that_fail_their_schema(
    api: httpx.Client, unique_name: str
) -> None:
    response = publish(api, unique_name, **BAD_DEFAULTS)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "InvalidPolicy" and "policy_parameters.min_gpus" in error["message"]


@pytest.mark.parametrize(
    ("body", "line", "needle"),
    [
        ("if input_data:\n    import os\nreturn {}", 10, "import of 'os' is not allowed"),
        ("if input_data:\n    return {'m': '{} GPUs'.format(2)}\nreturn {}", 10,
         "use an f-string"),
        ("if input_data:\n    return {'t': type(input_data) == dict}\nreturn {}", 10,
         "type is not available in policies; use isinstance"),
        ("d = {'a': 1}\nd['a'] += 1\nreturn d", 10, "write d['a'] = d['a'] + ..."),
    ],
    ids=["import-in-function", "format", "type", "augmented-item"],
)
def test_check_sees_what_fails_only_when_the_line_runs(
    tmp_path: Path, body: str, line: int, needle: str
) -> None:
    path = tmp_path / "p.py"
    path.write_text(eval_body(body))
    done = aios_policy("check", str(path))
    assert done.returncode == 1, done.stdout
    error = single_json(done.stdout)["error"]
    assert error["type"] == "CompileError"
    assert error["message"].startswith(f"Line {line}: ") and needle in error["message"], error


def test_eval_names_the_fix_for_an_augmented_item_assignment(tmp_path: Path) -> None:
    path = tmp_path / "p.py"
    path.write_text(eval_body("d = {'a': 1}\nd['a'] += 1\nreturn d"))
    error = single_json(aios_policy("eval", str(path)).stdout)["error"]
    assert "d[k] = d[k] + 1" in error["message"]


@pytest.mark.parametrize(
    ("kind", "result", "needle"),
    [
        ("precheck", {"allow": True}, "result has no 'allowed' (its keys: allow)"),
        ("precheck", {"allowed": "yes"}, 'result.allowed is "yes"'),
        ("stability_checker", {"stable": True}, "result has no 'is_stable'"),
    ],
)
def test_eval_and_test_check_the_result_contract_of_the_type(
    tmp_path: Path, kind: str, result: dict, needle: str
) -> None:
    code = eval_body(f"return {result!r}")
    directory = policy_dir(tmp_path, code, {"a": {"input_data": {}, "expected": result}},
                           type=kind)
    error = single_json(aios_policy("eval", str(directory)).stdout)["error"]
    assert error["type"] == "InvalidOutput" and needle in error["message"], error
    done = aios_policy("test", str(directory))
    assert done.returncode == 1
    assert "got error InvalidOutput" in done.stdout and needle in done.stdout


@pytest.mark.parametrize(
    "metadata",
    [{"tags": ["add_node"]}, {"tags": "gpu,scale_block"}, {"tags": ["create_cluster"]},
     {"metadata": {"action": "remove_node"}}],
    ids=["action-tag", "tag-string", "upstream-alias", "metadata-action"],
)
def test_a_policy_for_a_governed_action_is_held_to_the_pre_check_contract(
    tmp_path: Path, metadata: dict
) -> None:
    """No ``type``, but it names a governed action: the service runs it as that action's
    pre-check and denies on a result without a boolean ``allowed``, so eval and test fail."""
    code = eval_body("return {'allow': True}")
    directory = policy_dir(tmp_path, code, {"a": {"input_data": {}, "expected": {"allow": True}}},
                           **metadata)
    done = aios_policy("eval", str(directory))
    assert done.returncode == 1
    error = single_json(done.stdout)["error"]
    assert error["type"] == "InvalidOutput", error
    assert "result has no 'allowed' (its keys: allow)" in error["message"]
    tested = aios_policy("test", str(directory))
    assert tested.returncode == 1
    assert "got error InvalidOutput" in tested.stdout and "'allowed'" in tested.stdout


def test_the_author_tools_and_the_service_hold_a_policy_to_one_contract() -> None:
    """The kind the tools infer for a policy naming an action is how the service runs it."""
    from policy_runtime import authoring
    from policy_runtime.governance import inputs
    from policy_runtime.governance.actions import ACTIONS, ALIASES, kind_of
    from policy_runtime.governance.precheck import _interpret

    for action in (*ACTIONS, *ALIASES):
        assert authoring.policy_kind({"tags": [action]}) == kind_of(action) == "precheck"
        assert inputs.action_of({"tags": [action]}) == ALIASES.get(action, action)
    stability = {"metadata": {"action": "stability_check"}}
    assert authoring.policy_kind(stability) == "stability_checker"
    assert authoring.policy_kind({"type": "stability", "tags": ["add_node"]}) == (
        "stability_checker")
    assert authoring.policy_kind({"tags": ["add_node", "remove_node"]}) is None
    # what the tools refuse, the service denies; what they accept, it decides on
    for result in ({"allow": True}, {"allowed": "yes"}, [True]):
        with pytest.raises(Exception, match="allowed"):
            authoring.check_result_contract({"tags": ["add_node"]}, result)
        assert _interpret(result, {})[0] is False
    authoring.check_result_contract({"tags": ["add_node"]}, {"allowed": True})
    assert _interpret({"allowed": True}, {})[0] is True


def test_a_policy_without_a_type_keeps_any_json_result(tmp_path: Path) -> None:
    directory = policy_dir(tmp_path, eval_body("return {'allow': True}"))
    assert single_json(aios_policy("eval", str(directory)).stdout)["ok"] is True


# -- 5. test cases ----------------------------------------------------------------------
PRECHECK = eval_body(
    "gpus = input_data['node']['gpus']['count']\n"
    "return {'allowed': gpus >= 2, 'input_data': input_data, 'reason': f'{gpus} GPUs'}"
)
NODE_INPUT = {"node": {"id": "n1", "gpus": {"count": 1, "gpus": [{"memory": 23034}]}}}


def test_partial_expectation_and_any(tmp_path: Path) -> None:
    cases = {
        "partial": {"input_data": NODE_INPUT, "match": "partial",
                    "expected": {"allowed": False}},
        "any": {"input_data": NODE_INPUT, "match": "partial",
                "expected": {"allowed": False, "reason": "<any>"}},
        "exact_with_any": {"input_data": NODE_INPUT,
                           "expected": {"allowed": False, "reason": "1 GPUs",
                                        "input_data": "<any>"}},
    }
    directory = policy_dir(tmp_path, PRECHECK, cases, type="precheck")
    done = aios_policy("test", str(directory))
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1] == "3 passed, 0 failed"


def test_a_failure_prints_one_line_per_differing_key(tmp_path: Path) -> None:
    cases = {
        "wrong": {"input_data": NODE_INPUT, "match": "partial",
                  "expected": {"allowed": True, "reason": "2 GPUs", "missing": 1}},
        "exact": {"input_data": NODE_INPUT, "expected": {"allowed": False, "reason": "<any>"}},
    }
    directory = policy_dir(tmp_path, PRECHECK, cases, type="precheck")
    done = aios_policy("test", str(directory))
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "FAIL cases/exact.json: result differs from expected:",
        '  result.input_data: not expected (got {"node": {"id": "n1", "gpus": {"count": 1, '
        '"gpus": [{"memory": 23034}]}}})',
        "FAIL cases/wrong.json: result differs from expected:",
        "  result.allowed: expected true, got false",
        '  result.reason: expected "2 GPUs", got "1 GPUs"',
        "  result.missing: missing (expected 1)",
        "0 passed, 2 failed",
    ]


def test_every_case_runs_in_isolation(tmp_path: Path) -> None:
    counting = eval_body(
        "self.seen.append(1)\nreturn {'calls': len(self.seen)}"
    ).replace("class AIOSv1PolicyRule:\n", "class AIOSv1PolicyRule:\n    seen = []\n\n")
    cases = {name: {"input_data": {}, "expected": {"calls": 1}} for name in ("a", "b", "c")}
    done = aios_policy("test", str(policy_dir(tmp_path, counting, cases)))
    assert done.returncode == 0, done.stdout
    assert done.stdout.splitlines()[-1] == "3 passed, 0 failed"


# -- 7. messages that name the fix ------------------------------------------------------
def test_eval_names_the_fix_for_format(tmp_path: Path) -> None:
    path = tmp_path / "p.py"
    path.write_text(eval_body("return {'m': '{} GPUs'.format(2)}"))
    error = single_json(aios_policy("eval", str(path)).stdout)["error"]
    assert error["type"] == "SandboxViolation"
    assert error["message"].endswith('. Use an f-string (f"{value}") or % formatting.')


def test_a_uri_without_its_release_tag_names_the_full_uri(
    api: httpx.Client, unique_name: str
) -> None:
    assert publish(api, unique_name).status_code == 201  # as <name>:v0.0.1-stable
    short = api.get(f"/policies/{unique_name}:v0.0.1")
    assert short.status_code == 404
    assert f"'{unique_name}:v0.0.1-stable'" in short.text
    assert "<name>:<version>-<release_tag>" in short.text
