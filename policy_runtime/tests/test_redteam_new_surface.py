"""Red-team probes of the surfaces added with logging, ``__name__``, output capture, the
persisted ``context`` and batched calls. Passing tests are attacks that are refused;
``xfail(strict=True)`` tests assert the safe behaviour of attacks that currently succeed."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import pytest
from policy_sources import eval_body
from pymongo import MongoClient

from policy_runtime.embedded_db import EmbeddedDatabase
from policy_runtime.errors import CompileError, InvalidOutput, PolicyError, Timeout
from policy_runtime.evaluation import LimitsConfig, PolicyEvaluator
from policy_runtime.sandbox.capture import (
    MAX_LOG_MESSAGE_CHARS,
    MAX_LOGGER_NAME_CHARS,
    MAX_PRINTED_CHARS,
)
from policy_runtime.sandbox.compiler import compile_policy
from policy_runtime.sandbox.pool import CallAnswer, PolicyCall, WorkerPool
from policy_runtime.store import database
from policy_runtime.store.context import COLLECTION, ContextStore


def _call(
    source: str,
    input_data: object = None,
    *,
    context: dict | None = None,
    timeout: float = 2.0,
    keep_context: bool = False,
    scope: str = "",
    rule_id: str = "",
) -> PolicyCall:
    return PolicyCall(
        op="eval",
        source=source,
        timeout_seconds=timeout,
        memory_mb=128,
        input_data=input_data,
        context=context or {},
        keep_context=keep_context,
        scope=scope,
        rule_id=rule_id,
    )


def _run(pool: WorkerPool, source: str, input_data: object = None, **kw: object) -> object:
    """The CallAnswer, or the error the call failed with."""
    try:
        return pool.call_answer(_call(source, input_data, **kw))  # type: ignore[arg-type]
    except Exception as exc:
        return exc


@pytest.fixture(scope="module")
def single() -> Iterator[WorkerPool]:
    """One worker: consecutive calls run in the same process."""
    with WorkerPool(1, max_memory_mb=256) as workers:
        yield workers


@pytest.fixture()
def fresh() -> Iterator[WorkerPool]:
    """One worker of its own, for attacks that may leave the worker damaged."""
    with WorkerPool(1, max_memory_mb=256) as workers:
        yield workers


# -- the logging shim ----------------------------------------------------------------

REAL_LOGGING_NAMES = eval_body(
    """
    import logging
    reached = []
    logger = logging.getLogger("x")
    for name in ["root", "Handler", "StreamHandler", "LogRecord", "makeLogRecord",
                 "Manager", "sys", "os", "threading", "traceback", "io", "lastResort",
                 "raiseExceptions", "getLoggerClass", "setLoggerClass", "addLevelName",
                 "captureWarnings", "shutdown", "currentframe", "handlers", "config"]:
        if hasattr(logging, name):
            reached.append("logging." + name)
    for name in ["handlers", "manager", "parent", "propagate", "filters", "findCaller",
                 "makeRecord", "handle", "callHandlers", "root", "disabled", "addFilter"]:
        if hasattr(logger, name):
            reached.append("logger." + name)
    return reached
    """
)


def test_the_shim_hands_out_none_of_the_real_logging_machinery(single: WorkerPool) -> None:
    answer = _run(single, REAL_LOGGING_NAMES)
    assert isinstance(answer, CallAnswer), answer
    assert answer.result == []


# Policies cannot define dunder methods, but a subclass of collections.UserString runs
# policy code from its inherited __str__/__repr__ when ``data`` is a property: a property
# with a policy getter is made from any allowed one (``Fraction.numerator.getter(f)``).
EVIL_PRELUDE = """
import collections
import fractions

class Sub(str):
    def upper(self):
        return "hijacked"

def evil_text(self):
    return Sub(self.text)

def failing(self):
    raise self.error

class Evil(collections.UserString):
    data = fractions.Fraction.numerator.getter(evil_text)
    def __init__(self, text):
        self.text = text

class Boom(collections.UserString):
    data = fractions.Fraction.numerator.getter(failing)
    def __init__(self, error):
        self.error = error
"""


def test_format_arguments_with_hostile_dunders_leave_plain_text(single: WorkerPool) -> None:
    source = eval_body(
        """
        import logging
        logging.info("%s|%r", Evil("evil-str"), 1)
        logging.info("%r", Boom(ValueError("no repr")))
        logging.info("%(k)s", {"k": Evil("mapped")})
        logging.info(Boom(RuntimeError("boom")))
        logging.getLogger(Evil("evil-name")).warning("%s %s", "only-one")
        logging.info("%s", Sub("sub"))
        logging.info(Evil("%s%s"), Evil("a"), Evil("b"))
        return 1
        """,
        prelude=EVIL_PRELUDE,
    )
    answer = _run(single, source)
    assert isinstance(answer, CallAnswer), answer
    logs = answer.output["logs"]
    assert [r["message"] for r in logs] == [
        "evil-str|1",
        "%r (arguments not formatted: ValueError: no repr)",
        "mapped",
        "(the message could not be read: RuntimeError)",
        "%s %s (arguments not formatted: TypeError: not enough arguments for format string)",
        "sub",
        "ab",
    ]
    assert logs[4]["logger"] == "evil-name"
    assert all(type(v) is str for r in logs for v in r.values())


def test_exc_info_stack_info_and_extra_add_no_traceback_or_frames(single: WorkerPool) -> None:
    source = eval_body(
        """
        import logging
        try:
            [][1]
        except Exception:
            logging.exception("caught", stack_info=True, extra={"a": 1}, stacklevel=5)
            logging.getLogger("n").error("again", exc_info=True, stack_info=True)
        logging.exception("outside")
        logging.error("tuple", exc_info=(1, 2, 3))
        return 1
        """
    )
    answer = _run(single, source)
    assert isinstance(answer, CallAnswer), answer
    messages = [r["message"] for r in answer.output["logs"]]
    assert messages == [
        "caught\nIndexError: list index out of range",
        "again\nIndexError: list index out of range",
        "outside\nNoneType: None",
        "tuple\nNoneType: None",
    ]
    text = repr(answer.output)
    for leak in ("Traceback", 'File "', "/work", "site-packages", "line "):
        assert leak not in text


def test_logger_names_and_messages_are_bounded(single: WorkerPool) -> None:
    source = eval_body(
        """
        import logging
        logging.getLogger("n" * 100000).info("m" * 100000)
        logging.getLogger("root").getChild("c" * 100000).info("x")
        for i in range(500):
            logging.info("r")
        return 1
        """
    )
    answer = _run(single, source)
    assert isinstance(answer, CallAnswer), answer
    logs = answer.output["logs"]
    assert len(logs) == 101  # 100 kept and the "dropped" notice
    assert len(logs[0]["logger"]) == MAX_LOGGER_NAME_CHARS
    assert logs[0]["message"] == "m" * MAX_LOG_MESSAGE_CHARS + " [...]"
    assert len(logs[1]["logger"]) == MAX_LOGGER_NAME_CHARS
    assert logs[-1]["message"].startswith("402 more log records were dropped")


def test_level_names_are_bounded(single: WorkerPool) -> None:
    source = eval_body('import logging\nlogging.log(10 ** 4000, "x")\nreturn 1')
    answer = _run(single, source)
    assert isinstance(answer, CallAnswer), answer
    assert len(answer.output["logs"][0]["level"]) <= MAX_LOGGER_NAME_CHARS


def test_shim_loggers_are_not_writable_and_not_shared(single: WorkerPool) -> None:
    source = eval_body(
        """
        import logging
        a = logging.getLogger("same")
        a.setLevel(logging.ERROR)
        b = logging.getLogger("same")
        out = [a is b, b.level]
        try:
            a.level = 5
        except Exception as e:
            out.append(str(e))
        return out
        """
    )
    answer = _run(single, source)
    # _write_ refuses the attribute store on a shim Logger: a guard violation.
    assert not isinstance(answer, CallAnswer)
    assert "Logger objects cannot be modified by policies" in str(answer)


def test_unbound_setlevel_is_not_a_channel_between_policies(fresh: WorkerPool) -> None:
    writer = eval_body(
        """
        import logging, json
        logging.Logger.setLevel(logging.info, 4242)
        logging.Logger.setLevel(json.JSONDecoder, 7)
        return "written"
        """
    )
    reader = eval_body(
        """
        import logging, json
        return [getattr(logging.info, "level", None), getattr(json.JSONDecoder, "level", None)]
        """
    )
    _run(fresh, writer)  # refused or not, it must leave nothing behind
    answer = _run(fresh, reader)
    assert isinstance(answer, CallAnswer), answer
    assert answer.result == [None, None]


def test_unbound_setlevel_cannot_break_logging_for_the_next_policy(fresh: WorkerPool) -> None:
    poison = eval_body("import logging\nlogging.Logger.setLevel(logging.Logger, 10)\nreturn 1")
    victim = eval_body('import logging\nlogging.getLogger("v").info("hi")\nreturn "fine"')
    _run(fresh, poison)
    answer = _run(fresh, victim)
    assert isinstance(answer, CallAnswer), answer
    assert answer.result == "fine"


# -- __name__ -------------------------------------------------------------------------


def test_dunder_name_is_a_plain_string(single: WorkerPool) -> None:
    source = eval_body(
        """
        class Inner:
            seen = __name__
        return [__name__, Inner.seen, [__name__ for x in [1]][0], isinstance(__name__, str)]
        """
    )
    answer = _run(single, source)
    assert isinstance(answer, CallAnswer), answer
    assert answer.result == ["policy", "policy", "policy", True]


@pytest.mark.parametrize(
    "source",
    [
        "__name__ = 'x'\n",
        "del __name__\n",
        "import json as __name__\n",
        "x = [__name__ for __name__ in 'ab']\n",
        "def f(__name__=1):\n    pass\n",
        "match 1:\n    case __name__:\n        pass\n",
        "class C:\n    __name__ = 'x'\n",
        "(__name__ := 1)\n",
        "x = __name__.__class__\n",
    ],
)
def test_dunder_name_cannot_be_rebound_or_walked(source: str) -> None:
    with pytest.raises(CompileError):
        compile_policy(source)


# -- output capture --------------------------------------------------------------------


def test_printed_output_is_bounded_and_plain(single: WorkerPool) -> None:
    source = eval_body(
        """
        print(b"bytes\\xff")
        print("\\ud800")
        print(Evil("e" * 50000), sep="SEP" * 10000, end="END" * 10000)
        print("after")
        return 1
        """,
        prelude=EVIL_PRELUDE,
    )
    answer = _run(single, source)
    assert isinstance(answer, CallAnswer), answer
    printed = answer.output["printed"]
    assert printed.startswith("b'bytes\\xff'\n\\ud800\n")
    assert "after" not in printed
    assert len(printed) < MAX_PRINTED_CHARS + 200
    assert printed.endswith("characters of printed text]\n")


def test_a_finalizer_prints_in_its_own_call_only(single: WorkerPool) -> None:
    leaver = eval_body(
        """
        def gen():
            try:
                yield 1
            finally:
                print("LEFT-BY-LEAVER")
        class Holder:
            pass
        h = Holder()
        h.me = h
        h.g = gen()
        next(h.g)
        return 1
        """
    )
    other = eval_body('print("mine")\nreturn 2')
    first = _run(single, leaver)
    second = _run(single, other)
    assert isinstance(first, CallAnswer) and isinstance(second, CallAnswer)
    assert second.output == {"printed": "mine\n", "logs": []}


# -- batched calls ----------------------------------------------------------------------

HOLD = eval_body(
    """
    import datetime
    end = datetime.datetime.now() + datetime.timedelta(seconds=input_data)
    while datetime.datetime.now() < end:
        pass
    return "held"
    """
)


def _batched(pool: WorkerPool, calls: list[PolicyCall]) -> list[object]:
    """Run ``calls`` queued in order behind a hold, so that they reach the only worker
    in one frame; each caller's answer or error."""
    results: list[object] = [None] * (len(calls) + 1)

    def run(index: int, call: PolicyCall) -> None:
        try:
            results[index] = pool.call_answer(call)
        except Exception as exc:
            results[index] = exc

    holder = threading.Thread(target=run, args=(len(calls), _call(HOLD, 0.6)))
    holder.start()
    time.sleep(0.2)
    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    for thread in [holder, *threads]:
        thread.join(timeout=60)
    return results[:-1]


WRITER = eval_body(
    """
    import logging
    print("WRITER-PRINTED", context["secret"])
    logging.warning("WRITER-LOGGED %s", context["secret"])
    context["mine"] = context["secret"]
    return "written"
    """
)
READER = eval_body(
    """
    import logging, json
    found = []
    for name in ["info", "warning", "getLogger"]:
        found.append(getattr(getattr(logging, name), "level", None))
    found.append(sorted(context))
    return found
    """
)
SPIN = eval_body("while True:\n    pass")
SPIN_IN_ERROR = eval_body(
    """
    raise ValueError(Slow())
    """,
    prelude="""
import collections
import fractions

def spin(self):
    while True:
        pass

class Slow(collections.UserString):
    data = fractions.Fraction.numerator.getter(spin)
    def __init__(self):
        pass
""",
)
CATCH_THE_CLOCK = eval_body(
    """
    n = 0
    while n < 100:
        try:
            while True:
                pass
        except:
            n += 1
    return n
    """
)


def test_batch_members_see_nothing_of_each_other_and_fail_alone(fresh: WorkerPool) -> None:
    calls = [
        _call(WRITER, context={"secret": "s3cr3t"}, keep_context=True),
        _call(READER, context={"own": 1}, keep_context=True),
        _call(SPIN, timeout=0.5),
        _call(READER, context={}),
        _call(SPIN_IN_ERROR, timeout=0.5),
        _call(CATCH_THE_CLOCK, timeout=0.5),
        _call(READER, context={"last": 1}),
    ]
    results = _batched(fresh, calls)
    writer, reader, spin, reader2, spin_error, catcher, reader3 = results
    assert isinstance(writer, CallAnswer), writer
    assert writer.output["printed"] == "WRITER-PRINTED s3cr3t\n"
    assert writer.context == {"secret": "s3cr3t", "mine": "s3cr3t"}
    for answer, keys in ((reader, ["own"]), (reader2, []), (reader3, ["last"])):
        assert isinstance(answer, CallAnswer), answer
        assert answer.result == [None, None, None, keys]
        assert answer.output == {"printed": "", "logs": []}
        assert "s3cr3t" not in repr(answer)
    assert isinstance(spin, Timeout)
    assert isinstance(spin_error, (Timeout, PolicyError)), spin_error
    assert not isinstance(catcher, CallAnswer)
    assert isinstance(catcher, Timeout), catcher


def test_a_context_returned_as_result_is_copied_not_shared(single: WorkerPool) -> None:
    source = eval_body(
        """
        class K(str):
            pass
        context[K("k")] = [1]
        context["self"] = {"nested": [1, 2]}
        return context
        """
    )
    answer = _run(single, source, context={"a": 1}, keep_context=True)
    assert isinstance(answer, CallAnswer), answer
    assert answer.result == answer.context == {"a": 1, "k": [1], "self": {"nested": [1, 2]}}
    assert all(type(k) is str for k in answer.context)


def test_a_self_referencing_context_is_invalid_output(single: WorkerPool) -> None:
    source = eval_body('context["me"] = context\nreturn 1')
    answer = _run(single, source, keep_context=True)
    assert isinstance(answer, InvalidOutput), answer
    assert "nested deeper than" in str(answer)


def test_a_context_holding_a_huge_int_or_set_is_refused(single: WorkerPool) -> None:
    big = _run(single, eval_body('context["n"] = 10 ** 5000\nreturn 1'), keep_context=True)
    assert isinstance(big, InvalidOutput), big
    other = _run(single, eval_body('context["s"] = {1}\nreturn 1'), keep_context=True)
    assert isinstance(other, InvalidOutput), other
    assert 'context["s"]: set is not JSON' in str(other)


def test_module_state_is_kept_per_policy_uri_and_cluster(single: WorkerPool) -> None:
    """Module-level state lives as long as the worker keeps the module, but one module per
    policy URI and cluster: a context stashed there by a decision for one cluster (or one
    policy) never reaches a decision for another, even with the same code."""
    stash = (
        eval_body(
            """
        SEEN.append(dict(context))
        return [c.get("secret") for c in SEEN]
        """,
            prelude="SEEN = []",
        )
        + f"# {secrets.token_hex(4)}\n"
    )
    west = _run(single, stash, context={"secret": "west-cluster-token"}, scope="west",
                rule_id="p:1")
    assert isinstance(west, CallAnswer) and west.result == ["west-cluster-token"], west
    east = _run(single, stash, context={"secret": "east"}, scope="east", rule_id="p:1")
    assert isinstance(east, CallAnswer), east
    assert east.result == ["east"]
    other_uri = _run(single, stash, context={"secret": "other"}, scope="west", rule_id="q:1")
    assert isinstance(other_uri, CallAnswer) and other_uri.result == ["other"], other_uri
    again = _run(single, stash, context={"secret": "west-2"}, scope="west", rule_id="p:1")
    assert isinstance(again, CallAnswer)
    assert again.result == ["west-cluster-token", "west-2"], "kept within its own scope"


# -- the persisted context store ---------------------------------------------------------


@pytest.fixture(scope="module")
def store(embedded_db: EmbeddedDatabase) -> Iterator[tuple[ContextStore, MongoClient]]:
    client = database.connect(embedded_db.uri)
    yield ContextStore(client[f"redteam_{secrets.token_hex(4)}"], max_bytes=2048), client
    client.close()


@pytest.fixture(scope="module")
def persisting(pool: WorkerPool, store: tuple[ContextStore, MongoClient]) -> PolicyEvaluator:
    return PolicyEvaluator(pool, LimitsConfig(default_timeout_seconds=2.0), store[0])


def _doc(code: str) -> dict:
    return {"code": code, "policy_rule_uri": f"rt-{secrets.token_hex(5)}:v1-stable"}


def test_operator_and_dotted_keys_are_stored_as_text(
    persisting: PolicyEvaluator, store: tuple[ContextStore, MongoClient]
) -> None:
    contexts, _ = store
    evil = {
        "$where": "sleep(10000)",
        "a.b": {"$gt": ""},
        "_id": "other",
        "version": 99,
        "$set": {"state": "{}"},
        "policy_rule_uri2": "x",
    }
    source = eval_body(
        "for k, v in input_data.items():\n    context[k] = v\nreturn sorted(context)"
    )
    document = _doc(source)
    outcome = persisting.evaluate(document, evil, cluster_id='west"]')
    assert outcome.ok, outcome.error
    assert contexts.get(document["policy_rule_uri"], 'west"]') == evil
    stored = contexts.collection.find_one(
        {"_id": contexts.load(document["policy_rule_uri"], 'west"]').key}
    )
    assert stored is not None
    assert set(stored) == {"_id", "policy_rule_uri", "cluster_id", "state", "version", "updated"}
    assert stored["version"] == 1
    assert contexts.get(document["policy_rule_uri"], "west") == {}
    assert contexts.collection.count_documents({"_id": "other"}) == 0


def test_the_reserved_uri_key_cannot_redirect_the_store(
    persisting: PolicyEvaluator, store: tuple[ContextStore, MongoClient]
) -> None:
    contexts, _ = store
    victim = _doc(eval_body('context["n"] = 1\nreturn 1'))
    persisting.evaluate(victim, None)
    attacker = _doc(
        eval_body(
            'context["policy_rule_uri"] = input_data\ncontext["n"] = 666\nreturn sorted(context)'
        )
    )
    outcome = persisting.evaluate(attacker, victim["policy_rule_uri"])
    assert outcome.ok, outcome.error
    assert contexts.get(victim["policy_rule_uri"]) == {"n": 1}
    assert contexts.get(attacker["policy_rule_uri"]) == {"n": 666}


def test_deep_or_oversized_contexts_store_nothing(
    persisting: PolicyEvaluator, store: tuple[ContextStore, MongoClient]
) -> None:
    contexts, client = store
    deep = _doc(
        eval_body("x = []\nfor i in range(200):\n    x = [x]\ncontext['deep'] = x\nreturn 1")
    )
    outcome = persisting.evaluate(deep, None)
    assert not outcome.ok and outcome.error["type"] == "InvalidOutput", outcome.error
    big = _doc(eval_body("context['big'] = 'x' * 3000\nreturn 1"))
    outcome = persisting.evaluate(big, None)
    assert not outcome.ok and outcome.error["type"] == "InvalidOutput", outcome.error
    assert "over the limit" in outcome.error["message"]
    collection = client[contexts.collection.database.name][COLLECTION]
    for document in (deep, big):
        assert collection.count_documents({"policy_rule_uri": document["policy_rule_uri"]}) == 0


# -- policy code after the call: a finalizer plants a dict subclass in the checked result --
# plain_result() returns a result that already is exact JSON as it is (no copy); a
# generator's ``finally`` that runs later in the call (instance freed, end_of_call's
# collection) can then put a dict subclass into it. json.dumps calls that subclass's
# ``items()`` while the worker encodes the answer: policy code outside the call's CPU and
# memory limits, after its capture was collected and after its end-of-call collection,
# so whatever garbage it leaves is collected -- its finalizers run -- in the next call.

LATE_PRELUDE = """
import logging
KEEP = []

def haunt(mode):
    try:
        yield 1
    finally:
        print("PRINTED-BY-ATTACKER")
        logging.warning("LOGGED-BY-ATTACKER")
        if mode == "spin":
            while True:
                pass
        if mode == "violate":
            getattr(1, "_" + "x")

class D(dict):
    def items(self):
        if self["mode"] == "retain":
            KEEP.append("r" * (150 * 1024 * 1024))
        g = haunt(self["mode"])
        next(g)
        box = [g]
        box.append(box)
        return [("evil", "ran during encoding")]

def late(target, mode):
    try:
        yield 1
    finally:
        d = D()
        d["mode"] = mode
        target["late"] = d
"""
LATE = eval_body(
    """
    result = {"ok": True}
    g = late(result if input_data != "context" else context, input_data)
    next(g)
    box = [g]
    box.append(box)
    return result
    """,
    prelude=LATE_PRELUDE,
)
VICTIM = eval_body('print("victim")\nreturn "victim-ok"')
VICTIM_40MB = eval_body('s = "v" * (40 * 1024 * 1024)\nprint("victim")\nreturn "victim-ok"')


def _victim_after(
    pool: WorkerPool, mode: str, victim: str = VICTIM, memory_mb: int = 128
) -> tuple[object, object]:
    attack = _run(pool, LATE, mode, keep_context=mode == "context")
    try:
        answer = pool.call_answer(
            PolicyCall(
                op="eval",
                source=victim,
                timeout_seconds=1.0,
                memory_mb=memory_mb,
            )
        )
    except Exception as exc:
        return attack, exc
    return attack, answer


@pytest.mark.parametrize("mode", ["print", "context"])
def test_encoding_an_answer_runs_no_policy_code(fresh: WorkerPool, mode: str) -> None:
    attack, _ = _victim_after(fresh, mode)
    assert "ran during encoding" not in repr(attack), attack


def test_a_finished_call_prints_nothing_into_the_next(fresh: WorkerPool) -> None:
    _, victim = _victim_after(fresh, "print")
    assert isinstance(victim, CallAnswer), victim
    assert victim.output == {"printed": "victim\n", "logs": []}


def test_a_finished_call_cannot_make_the_next_time_out(fresh: WorkerPool) -> None:
    _, victim = _victim_after(fresh, "spin")
    assert isinstance(victim, CallAnswer), victim
    assert victim.result == "victim-ok"


def test_a_finished_call_cannot_fail_the_next_with_a_violation(fresh: WorkerPool) -> None:
    _, victim = _victim_after(fresh, "violate")
    assert isinstance(victim, CallAnswer), victim
    assert victim.result == "victim-ok"


def test_memory_kept_after_the_call_does_not_fail_the_next(fresh: WorkerPool) -> None:
    _, victim = _victim_after(fresh, "retain", VICTIM_40MB, memory_mb=64)
    assert isinstance(victim, CallAnswer), victim
    assert victim.result == "victim-ok"


def test_a_batch_member_never_gets_its_neighbours_output(fresh: WorkerPool) -> None:
    attack, victim = _batched(fresh, [_call(LATE, "print"), _call(VICTIM)])
    assert isinstance(attack, CallAnswer), attack
    assert isinstance(victim, CallAnswer), victim
    assert victim.output == {"printed": "victim\n", "logs": []}
