"""``aios-policy``: serve the runtime, evaluate and check policies, run their test cases.

``eval`` and ``check`` print exactly one JSON object on stdout and exit 0 when it says
``"ok": true``, 1 otherwise; diagnostics go to stderr, never a traceback to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from policy_runtime import __version__
from policy_runtime.errors import InvalidInput, PolicyRuntimeError
from policy_runtime.evaluation import LimitsConfig, Outcome, PolicyEvaluator
from policy_runtime.policy_files import PolicyFileError, case_files, load_policy_path, read_json
from policy_runtime.sandbox.pool import WorkerPool


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")


def _json_option(text: str | None, flag: str) -> dict:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{flag} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{flag} must be a JSON object, got {type(value).__name__}")
    return value


def _local_evaluator(memory_mb: float | None, timeout: float | None) -> PolicyEvaluator:
    limits = LimitsConfig()
    max_memory = max(limits.max_memory_mb, int(memory_mb or 0))
    max_timeout = max(limits.max_timeout_seconds, timeout or 0)
    limits = LimitsConfig(max_timeout_seconds=max_timeout, max_memory_mb=max_memory)
    pool = WorkerPool(1, max_memory).start()
    return PolicyEvaluator(pool, limits)


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        policy = load_policy_path(Path(args.policy))
        input_data = read_json(Path(args.input), "input file") if args.input else {}
        parameters = _json_option(args.parameters, "--parameters")
        settings = _json_option(args.settings, "--settings")
    except PolicyFileError as exc:
        outcome = Outcome(ok=False, error=InvalidInput(str(exc)).to_dict())
    except PolicyRuntimeError as exc:
        outcome = Outcome(ok=False, error=exc.to_dict())
    else:
        if args.timeout is not None:
            settings["timeout_seconds"] = args.timeout
        if args.memory_mb is not None:
            settings["memory_mb"] = args.memory_mb
        evaluator = _local_evaluator(args.memory_mb, args.timeout)
        try:
            outcome = evaluator.evaluate(
                policy, input_data, parameters=parameters, settings=settings
            )
        finally:
            evaluator.pool.close()
    _print_json(outcome.to_dict())
    return 0 if outcome.ok else 1


def cmd_check(args: argparse.Namespace) -> int:
    try:
        policy = load_policy_path(Path(args.policy))
    except PolicyFileError as exc:
        _print_json({"ok": False, "error": InvalidInput(str(exc)).to_dict()})
        return 1
    evaluator = _local_evaluator(None, None)
    try:
        result = evaluator.check(policy["code"])
    except PolicyRuntimeError as exc:
        _print_json({"ok": False, "error": exc.to_dict()})
        return 1
    finally:
        evaluator.pool.close()
    _print_json({"ok": True, "result": {"contract": "AIOSv1PolicyRule", **result}})
    return 0


def _run_case(evaluator: PolicyEvaluator, policy: dict, path: Path) -> str | None:
    """None when the case passes, else why it failed."""
    try:
        case = read_json(path, "case file")
    except PolicyFileError as exc:
        return str(exc)
    if not isinstance(case, dict) or ("expected" in case) == ("expected_error" in case):
        return 'a case must be a JSON object with exactly one of "expected" or "expected_error"'
    outcome = evaluator.evaluate(
        policy,
        case.get("input_data"),
        parameters=case.get("parameters"),
        settings=case.get("settings"),
    )
    if "expected_error" in case:
        if outcome.error_type == case["expected_error"]:
            return None
        got = outcome.error if not outcome.ok else {"result": outcome.result}
        return f"expected error {case['expected_error']}, got {json.dumps(got)}"
    if not outcome.ok:
        return f"expected {json.dumps(case['expected'])}, got error {json.dumps(outcome.error)}"
    if outcome.result != case["expected"]:
        return f"expected {json.dumps(case['expected'])}, got {json.dumps(outcome.result)}"
    return None


def cmd_test(args: argparse.Namespace) -> int:
    directory = Path(args.policy_dir)
    try:
        policy = load_policy_path(directory)
    except PolicyFileError as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        return 1
    cases = case_files(directory)
    if not cases:
        print(f"ERROR {directory} has no cases/*.json to run", file=sys.stderr)
        return 1
    evaluator = _local_evaluator(None, None)
    failed = 0
    try:
        for path in cases:
            problem = _run_case(evaluator, policy, path)
            name = path.relative_to(directory)
            if problem is None:
                print(f"PASS {name}")
            else:
                failed += 1
                print(f"FAIL {name}: {problem}")
    finally:
        evaluator.pool.close()
    print(f"{len(cases) - failed} passed, {failed} failed")
    return 1 if failed else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from policy_runtime.server import serve  # the web stack is only needed here

    return serve(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aios-policy", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to bind (default 8080)")
    serve.add_argument(
        "--modes", default=None, help="comma list of run modes (default: AIOS_RUN_MODES)"
    )
    db = serve.add_mutually_exclusive_group()
    db.add_argument("--mongo-uri", default=None, help="MongoDB URI (default: AIOS_MONGO_URI)")
    db.add_argument(
        "--embedded-db",
        metavar="DIR",
        default=None,
        help="start an embedded MongoDB-wire-protocol server with its data in DIR",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="serve without an API token (local experiments only; never in production)",
    )
    serve.set_defaults(func=cmd_serve)

    ev = sub.add_parser("eval", help="evaluate a policy once, print one JSON object")
    ev.add_argument("policy", metavar="POLICY_FILE", help="policy .py file or policy directory")
    ev.add_argument("--input", metavar="INPUT_JSON_FILE", help="file holding input_data")
    ev.add_argument("--parameters", metavar="JSON", help="parameters overriding the defaults")
    ev.add_argument("--settings", metavar="JSON", help="settings overriding the defaults")
    ev.add_argument("--timeout", type=float, metavar="SECONDS", help="time limit (default 2)")
    ev.add_argument("--memory-mb", type=int, metavar="MB", help="memory limit (default 256)")
    ev.set_defaults(func=cmd_eval)

    check = sub.add_parser("check", help="compile a policy and check its contract")
    check.add_argument("policy", metavar="POLICY_FILE", help="policy .py file or policy directory")
    check.set_defaults(func=cmd_check)

    test = sub.add_parser("test", help="run a policy directory's cases/*.json")
    test.add_argument("policy_dir", metavar="POLICY_DIR")
    test.set_defaults(func=cmd_test)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "serve":  # serve configures JSON logs itself
        logging.basicConfig(format="aios-policy: %(message)s", level=logging.WARNING)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
