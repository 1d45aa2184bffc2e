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

from policy_runtime import __version__, authoring, schemas
from policy_runtime.errors import InvalidInput, InvalidOutput, PolicyRuntimeError
from policy_runtime.evaluation import LimitsConfig, Outcome, PolicyEvaluator
from policy_runtime.governance import inputs
from policy_runtime.governance.actions import UnknownAction
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


def _contract_checked(policy: dict, outcome: Outcome) -> Outcome:
    """The outcome, failed as the governing service would fail it: a result that breaks
    the contract of the policy's type (pre-check, stability checker) is InvalidOutput."""
    if outcome.ok:
        try:
            authoring.check_result_contract(policy, outcome.result)
        except InvalidOutput as exc:
            return Outcome(ok=False, error=exc.to_dict(), duration_ms=outcome.duration_ms,
                           output=outcome.output)
    elif outcome.error:
        message = authoring.explain_error(outcome.error["message"])
        return Outcome(ok=False, error={**outcome.error, "message": message},
                       output=outcome.output)
    return outcome


def _check_schemas(policy: dict) -> None:
    """The schema checks publishing runs, so that a bad schema reads as publishing says it."""
    schemas.check_schemas(policy)
    schemas.check_defaults(policy)


def cmd_eval(args: argparse.Namespace) -> int:
    try:
        policy = load_policy_path(Path(args.policy))
        input_data = read_json(Path(args.input), "input file") if args.input else {}
        parameters = _json_option(args.parameters, "--parameters")
        settings = _json_option(args.settings, "--settings")
        _check_schemas(policy)
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
            outcome = _contract_checked(policy, evaluator.evaluate(
                policy, input_data, parameters=parameters, settings=settings
            ))
        finally:
            evaluator.pool.close()
    _print_json(outcome.to_dict(with_output=args.print))
    return 0 if outcome.ok else 1


def _shown_output(outcome: Outcome) -> str:
    """What the policy printed and logged, indented under a failing case ("" if nothing)."""
    lines = []
    if outcome.printed:
        lines.append("  printed:")
        lines.extend(f"    {line}" for line in outcome.printed.rstrip("\n").split("\n"))
    for record in outcome.logs:
        first, *rest = str(record.get("message", "")).split("\n")
        lines.append(f"  log {record.get('level')} {record.get('logger')}: {first}")
        lines.extend(f"    {line}" for line in rest)
    return "\n" + "\n".join(lines) if lines else ""


def cmd_check(args: argparse.Namespace) -> int:
    """Every static check publishing runs, plus a lint for what fails only when run."""
    try:
        policy = load_policy_path(Path(args.policy))
    except PolicyFileError as exc:
        _print_json({"ok": False, "error": InvalidInput(str(exc)).to_dict()})
        return 1
    try:
        authoring.static_check(policy)
    except PolicyRuntimeError as exc:
        _print_json({"ok": False, "error": exc.to_dict()})
        return 1
    evaluator = _local_evaluator(None, None)
    try:
        result = evaluator.check(policy["code"])
    except PolicyRuntimeError as exc:
        error = exc.to_dict()
        error["message"] = authoring.explain_error(error["message"])
        _print_json({"ok": False, "error": error})
        return 1
    finally:
        evaluator.pool.close()
    _print_json({"ok": True, "result": {"contract": "AIOSv1PolicyRule", **result}})
    return 0


def _shape_problem(action: str | None, case: dict) -> str | None:
    """Why the case's input_data is not what the policy's action hands it, or None.

    A case may leave parts of the real input out; what it gives must have the real shape.
    Cases that expect InvalidInput are about wrong input and are not checked.
    """
    if action is None or case.get("expected_error") == "InvalidInput":
        return None
    try:
        schema = inputs.without_required(inputs.input_schema(action))
    except UnknownAction:
        return None
    try:
        schemas.validate(schema, case.get("input_data"), what="input_data")
    except PolicyRuntimeError as exc:
        return (f"{exc.message} — not the shape {action} hands its policy "
                f"(GET /action-inputs/{action})")
    return None


def _run_case(evaluator: PolicyEvaluator, policy: dict, path: Path,
              action: str | None = None) -> str | None:
    """None when the case passes, else why it failed (one or more lines)."""
    try:
        case = read_json(path, "case file")
    except PolicyFileError as exc:
        return str(exc)
    if not isinstance(case, dict) or ("expected" in case) == ("expected_error" in case):
        return 'a case must be a JSON object with exactly one of "expected" or "expected_error"'
    mode = case.get("match", "exact")
    if mode not in ("exact", "partial"):
        return f'"match" must be "exact" or "partial", got {json.dumps(mode)}'
    shape = _shape_problem(action, case)
    if shape:
        return shape
    # every case gets its own copy of the policy: nothing a case leaves on the class or
    # module (a class attribute, a cache) reaches the next one
    isolated = {**policy, "code": f"{policy['code']}\n# aios-policy test case: {path.name}\n"}
    outcome = _contract_checked(policy, evaluator.evaluate(
        isolated,
        case.get("input_data"),
        parameters=case.get("parameters"),
        settings=case.get("settings"),
    ))
    problem = _case_problem(case, outcome, mode)
    return None if problem is None else problem + _shown_output(outcome)


def _case_problem(case: dict, outcome: Outcome, mode: str) -> str | None:
    if "expected_error" in case:
        if outcome.error_type == case["expected_error"]:
            return None
        got = outcome.error if not outcome.ok else {"result": outcome.result}
        return f"expected error {case['expected_error']}, got {json.dumps(got)}"
    if not outcome.ok:
        error = outcome.error or {}
        return f"expected a result, got error {error.get('type')}: {error.get('message')}"
    differences = authoring.differences(case["expected"], outcome.result,
                                        partial=mode == "partial")
    if differences:
        return "result differs from expected:\n" + "\n".join(f"  {d}" for d in differences)
    return None


def cmd_test(args: argparse.Namespace) -> int:
    directory = Path(args.policy_dir)
    try:
        policy = load_policy_path(directory)
        _check_schemas(policy)
    except PolicyFileError as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        return 1
    except PolicyRuntimeError as exc:
        print(f"ERROR {exc.type_name}: {exc.message}", file=sys.stderr)
        return 1
    cases = case_files(directory)
    if not cases:
        print(f"ERROR {directory} has no cases/*.json to run", file=sys.stderr)
        return 1
    action = inputs.action_of(policy)
    evaluator = _local_evaluator(None, None)
    failed = 0
    try:
        for path in cases:
            problem = _run_case(evaluator, policy, path, action)
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


def _token_store(args: argparse.Namespace) -> tuple:
    from policy_runtime.auth.tokens import TokenStore
    from policy_runtime.config import Settings
    from policy_runtime.store import database

    settings = Settings()
    client = database.connect(args.mongo_uri or settings.mongo_uri, settings.db_timeout_seconds)
    store = TokenStore(client[args.db_name or settings.db_name])
    store.ensure_indexes()
    return client, store


def cmd_token(args: argparse.Namespace) -> int:
    """``token create|list|revoke|roles``: one JSON document on stdout; errors on stderr."""
    from datetime import UTC, datetime, timedelta

    from policy_runtime.auth.permissions import permission_table
    from policy_runtime.auth.tokens import InvalidToken, TokenConflict, TokenNotFound

    if args.what == "roles":
        _print_json(permission_table())
        return 0
    client, store = _token_store(args)
    try:
        if args.what == "create":
            expires = None
            if args.expires_in_days is not None:
                expires = datetime.now(UTC) + timedelta(days=args.expires_in_days)
            secret, record = store.create(
                args.name, args.role, clusters=args.cluster, policy_prefixes=args.policy_prefix,
                expires=expires, created_by="cli",
                secret=sys.stdin.readline().strip() if args.token_from_stdin else None,
            )
            _print_json({**record, "token": secret})
        elif args.what == "list":
            _print_json(store.list())
        else:
            _print_json(store.revoke(args.name))
    except InvalidToken as exc:
        print(f"ERROR {exc.field}: {exc}", file=sys.stderr)
        return 2
    except (TokenConflict, TokenNotFound) as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0


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
    ev.add_argument("--print", action="store_true",
                    help='add what the policy printed ("printed") and logged ("logs")')
    ev.set_defaults(func=cmd_eval)

    check_help = ("run every static check publishing runs (schemas, defaults against them, "
                  "compile, contract) and find what the sandbox refuses only when a line runs")
    check = sub.add_parser("check", help=check_help, description=check_help)
    check.add_argument("policy", metavar="POLICY_FILE", help="policy .py file or policy directory")
    check.set_defaults(func=cmd_check)

    test = sub.add_parser("test", help="run a policy directory's cases/*.json")
    test.add_argument("policy_dir", metavar="POLICY_DIR")
    test.set_defaults(func=cmd_test)

    token = sub.add_parser("token", help="create, list or revoke scoped API tokens")
    token_sub = token.add_subparsers(dest="what", required=True)
    create = token_sub.add_parser("create", help="create a token; prints it once")
    create.add_argument("name", help="unique name, recorded on every write the token makes")
    create.add_argument("--role", required=True,
                        help="admin, operator, cluster-owner, executor or reader")
    create.add_argument("--cluster", action="append", default=[], metavar="ID",
                        help="cluster-owner: a cluster it governs (repeat for more)")
    create.add_argument("--policy-prefix", action="append", default=[], metavar="PREFIX",
                        help="cluster-owner: a policy name prefix it may publish under")
    create.add_argument("--expires-in-days", type=float, metavar="DAYS",
                        help="expiry (default: never)")
    create.add_argument("--token-from-stdin", action="store_true",
                        help="store the token read from stdin (e.g. an executor's token "
                        "made by the policies system) instead of making a new one")
    token_sub.add_parser("list", help="every token (never its secret)")
    revoke = token_sub.add_parser("revoke", help="revoke a token (every replica within 1 s)")
    revoke.add_argument("name")
    token_sub.add_parser("roles", help="every role's permissions")
    for sub_parser in token_sub.choices.values():
        sub_parser.add_argument("--mongo-uri", default=None,
                                help="MongoDB URI (default: AIOS_MONGO_URI)")
        sub_parser.add_argument("--db-name", default=None, help="database (default: AIOS_DB_NAME)")
    token.set_defaults(func=cmd_token)
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
