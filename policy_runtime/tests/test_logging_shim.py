"""``import logging`` in a policy: upstream's logging calls run unchanged, records come back
with the decision, and the shim hands out nothing of the real logging machinery."""

from __future__ import annotations

import pytest
from policy_sources import eval_body

from policy_runtime import authoring
from policy_runtime.evaluation import PolicyEvaluator
from policy_runtime.sandbox.capture import MAX_LOG_MESSAGE_CHARS, MAX_LOG_RECORDS
from policy_runtime.sandbox.compiler import compile_policy

# Written as upstream AIOS's default policies are: module-level logging, a named logger.
UPSTREAM_STYLE = """\
import logging

logging.basicConfig(level=logging.INFO)
logger = logging.getLogger(__name__)


class AIOSv1PolicyRule:

    def __init__(self, rule_id, settings, parameters):
        self.rule_id = rule_id
        self.settings = settings
        self.parameters = parameters

    def eval(self, parameters, input_data, context):
        try:
            logging.info("input_data: %s", input_data)
            if input_data["action"] == "dry_run":
                logger.warning("dry run for %(who)s", {"who": "me"})
                return {"selection_score_data": {"score": 0.9, "node_info": {}}}
            logging.error("unknown action " + str(input_data["action"]))
            return {}
        except Exception as e:
            logging.exception("failed")
            raise e
"""


def policy(code: str, uri: str = "logging-test:v1-stable") -> dict:
    return {"code": code, "policy_rule_uri": uri}


def test_an_upstream_style_policy_runs_unchanged(evaluator: PolicyEvaluator) -> None:
    authoring.lint_source(UPSTREAM_STYLE)  # aios-policy check accepts it too
    outcome = evaluator.evaluate(policy(UPSTREAM_STYLE), {"action": "dry_run"})
    assert outcome.ok, outcome.error
    assert outcome.result == {"selection_score_data": {"score": 0.9, "node_info": {}}}
    assert outcome.logs == [
        {"level": "INFO", "logger": "root", "message": "input_data: {'action': 'dry_run'}"},
        {"level": "WARNING", "logger": "policy", "message": "dry run for me"},
    ]
    assert outcome.to_dict(with_output=True)["logs"] == outcome.logs


def test_records_come_back_with_a_failure(evaluator: PolicyEvaluator) -> None:
    outcome = evaluator.evaluate(policy(UPSTREAM_STYLE), {})
    assert outcome.error_type == "PolicyError"
    assert outcome.logs[-1] == {
        "level": "ERROR",
        "logger": "root",
        "message": "failed\nKeyError: 'action'",
    }


def test_every_level_and_the_logger_api(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        import logging
        from logging import getLogger
        log = getLogger("decider")
        log.debug("d")
        log.info("i")
        log.warn("w")
        log.critical("c")
        log.fatal("f")
        log.log(logging.ERROR, "e %s", 1)
        log.log("WARNING", "by name")
        logging.debug("root d")
        logging.critical("root c")
        logging.log(25, "custom")
        child = log.getChild("sub")
        child.info("from child", extra={"k": 1}, stacklevel=2)
        log.setLevel(logging.WARNING)
        log.info("filtered out")
        log.addHandler(None)
        return [log.name, child.name, log.isEnabledFor(logging.INFO),
                log.getEffectiveLevel(), logging.getLevelName(logging.ERROR),
                logging.getLevelName("INFO"), getLogger().name]
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert outcome.ok, outcome.error
    assert outcome.result == ["decider", "decider.sub", False, 30, "ERROR", 20, "root"]
    assert [(r["level"], r["logger"], r["message"]) for r in outcome.logs] == [
        ("DEBUG", "decider", "d"),
        ("INFO", "decider", "i"),
        ("WARNING", "decider", "w"),
        ("CRITICAL", "decider", "c"),
        ("CRITICAL", "decider", "f"),
        ("ERROR", "decider", "e 1"),
        ("WARNING", "decider", "by name"),
        ("DEBUG", "root", "root d"),
        ("CRITICAL", "root", "root c"),
        ("Level 25", "root", "custom"),
        ("INFO", "decider.sub", "from child"),
    ]


def test_a_bad_format_is_recorded_not_raised(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        import logging
        logging.info("%d items", "many")
        logging.info("%s and %s", 1)
        logging.info({"a": 1})
        return "went on"
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert outcome.result == "went on"
    messages = [r["message"] for r in outcome.logs]
    assert messages[0].startswith("%d items (arguments not formatted: TypeError")
    assert messages[1].startswith("%s and %s (arguments not formatted: TypeError")
    assert messages[2] == "{'a': 1}"


def test_records_are_bounded_in_number_and_size(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        import logging
        logging.warning("x" * 100000)
        for i in range(1000):
            logging.info("record %d", i)
        return 1
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert outcome.ok
    logs = outcome.logs
    assert len(logs) == MAX_LOG_RECORDS + 1
    assert len(logs[0]["message"]) == MAX_LOG_MESSAGE_CHARS + len(" [...]")
    assert logs[-2]["message"] == f"record {MAX_LOG_RECORDS - 2}"
    assert logs[-1]["message"].startswith(f"{1000 + 1 - MAX_LOG_RECORDS} more log records")


def test_logger_names_are_bounded(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        import logging
        logging.getLogger("n" * 5000).info("m")
        return 1
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert len(outcome.logs[0]["logger"]) == 200


# -- nothing real leaks -------------------------------------------------------------------

REAL_LOGGING_NAMES = [
    "root",
    "manager",
    "Manager",
    "Handler",
    "StreamHandler",
    "FileHandler",
    "LogRecord",
    "makeLogRecord",
    "setLoggerClass",
    "getLoggerClass",
    "addLevelName",
    "shutdown",
    "captureWarnings",
    "currentframe",
    "sys",
    "os",
    "threading",
    "traceback",
    "io",
    "time",
    "handlers",
    "config",
    "lastResort",
    "raiseExceptions",
    "setLogRecordFactory",
    "getHandlerByName",
    "Formatter",
    "Filter",
    "PlaceHolder",
    "logMultiprocessing",
    "logProcesses",
    "getLevelNamesMapping",
    "_lock",
    "__dict__",
    "__spec__",
    "__loader__",
    "__file__",
    "__builtins__",
]


@pytest.mark.parametrize("name", REAL_LOGGING_NAMES)
def test_the_module_has_none_of_the_real_machinery(evaluator: PolicyEvaluator, name: str) -> None:
    code = eval_body(
        f"""
        import logging
        try:
            return repr(getattr(logging, {name!r}))
        except AttributeError:
            return "absent"
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert (outcome.ok and outcome.result == "absent") or (
        outcome.error_type == "SandboxViolation"
    ), outcome


LOGGER_ATTRIBUTES = [
    "handlers",
    "parent",
    "manager",
    "root",
    "filters",
    "propagate",
    "disabled",
    "findCaller",
    "makeRecord",
    "handle",
    "callHandlers",
    "_log",
    "__class__",
    "__dict__",
    "__slots__",
    "__init__",
    "__reduce_ex__",
]


@pytest.mark.parametrize("name", LOGGER_ATTRIBUTES)
def test_a_logger_has_none_of_the_real_machinery(evaluator: PolicyEvaluator, name: str) -> None:
    code = eval_body(
        f"""
        import logging
        log = logging.getLogger("policy_runtime")
        try:
            return repr(getattr(log, {name!r}))
        except AttributeError:
            return "absent"
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert (outcome.ok and outcome.result == "absent") or (
        outcome.error_type == "SandboxViolation"
    ), outcome


@pytest.mark.parametrize(
    "body",
    [
        "import logging\nreturn logging.info.__globals__",
        "import logging\nreturn logging.getLogger().info.__func__",
        "import logging\nreturn logging.getLogger().info.__self__",
        "import logging\nreturn logging.Logger.__mro__",
        "import logging\nreturn logging.info.__code__",
        "import logging\nreturn getattr(logging.getLogger, '__wrapped__')",
        "import logging\nlogging.info = print\nreturn 1",
        "import logging\nsetattr(logging, 'info', print)\nreturn 1",
        "import logging\nlog = logging.getLogger('x')\nlog.level = 5\nreturn 1",
        "import logging\nlog = logging.getLogger('x')\nlog.name = 5\nreturn 1",
        "import logging\nlogging.Logger.info = 5\nreturn 1",
        "import logging\nsetattr(logging.Logger, 'info', 5)\nreturn 1",
        "import logging.handlers\nreturn 1",
        "from logging import handlers\nreturn handlers",
        "from logging import config\nreturn config",
        "import logging\nreturn logging.sys",
    ],
)
def test_escapes_through_the_shim_fail(evaluator: PolicyEvaluator, body: str) -> None:
    outcome = evaluator.evaluate(policy(eval_body(body)), None)
    assert not outcome.ok, outcome
    assert outcome.error_type in ("SandboxViolation", "PolicyError", "CompileError"), outcome


def test_no_state_is_shared_between_policies(evaluator: PolicyEvaluator) -> None:
    changer = policy(
        eval_body(
            """
            import logging
            logging.disable(logging.CRITICAL)
            logging.basicConfig(level=logging.ERROR)
            log = logging.getLogger("shared")
            log.setLevel(logging.CRITICAL)
            log.error("hidden")
            return log.level
            """
        ),
        "changer:v1-a",
    )
    reader = policy(
        eval_body(
            """
            import logging
            log = logging.getLogger("shared")
            log.debug("visible")
            logging.debug("root visible")
            return log.level
            """
        ),
        "reader:v1-a",
    )
    for _ in range(3):  # both workers serve both
        first = evaluator.evaluate(changer, None)
        assert first.ok and first.result == 50 and first.logs == []
        second = evaluator.evaluate(reader, None)
        assert second.ok and second.result == 0, second
        assert [r["message"] for r in second.logs] == ["visible", "root visible"]


def test_a_subclass_of_logger_cannot_smuggle_objects_out(evaluator: PolicyEvaluator) -> None:
    code = eval_body(
        """
        import logging
        class Mine(logging.Logger):
            pass
        log = Mine("mine")
        log.info("hello %s", [1, 2])
        log.name = [1, {"a": 2}]
        log.warning("renamed")
        return 1
        """
    )
    outcome = evaluator.evaluate(policy(code), None)
    assert outcome.ok, outcome.error
    # whatever a policy makes its logger's name, a record holds plain text
    assert outcome.logs == [
        {"level": "INFO", "logger": "mine", "message": "hello [1, 2]"},
        {"level": "WARNING", "logger": "[1, {'a': 2}]", "message": "renamed"},
    ]


def test_name_can_be_read_but_not_bound() -> None:
    compile_policy("x = __name__\n")
    for source in (
        "__name__ = 'x'\n",
        "del __name__\n",
        "def f(__name__):\n    pass\n",
        "for __name__ in []:\n    pass\n",
        "import json as __name__\n",
    ):
        with pytest.raises(Exception, match="__name__"):
            compile_policy(source)


def test_the_lint_accepts_logging_and_still_lists_the_allowed_modules() -> None:
    authoring.lint_source("import logging\nfrom logging import getLogger\n")
    with pytest.raises(Exception, match="logging"):
        authoring.lint_source("import os\n")
