"""A policy's ``context`` persists between decisions: per policy and cluster, size-bounded,
stored only by decisions that succeed, and never losing an update to a concurrent one."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from conftest import RuntimeServer
from policy_sources import eval_body
from pymongo import MongoClient

from policy_runtime.embedded_db import EmbeddedDatabase
from policy_runtime.evaluation import CONTEXT_ATTEMPTS, LimitsConfig, PolicyEvaluator
from policy_runtime.sandbox.pool import WorkerPool
from policy_runtime.store import database
from policy_runtime.store.context import COLLECTION, ContextSlot, ContextStore

COUNTER = eval_body(
    """
    context["count"] = context.get("count", 0) + 1
    if input_data == "fail":
        raise ValueError("failed after counting")
    return context["count"]
    """
)


@pytest.fixture(scope="module")
def client(embedded_db: EmbeddedDatabase) -> Iterator[MongoClient]:
    connection = database.connect(embedded_db.uri)
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def contexts(client: MongoClient) -> ContextStore:
    return ContextStore(client[f"context_{secrets.token_hex(4)}"], max_bytes=1024)


@pytest.fixture(scope="module")
def persisting(pool: WorkerPool, contexts: ContextStore) -> PolicyEvaluator:
    return PolicyEvaluator(pool, LimitsConfig(default_timeout_seconds=2.0), contexts)


def policy(code: str, name: str | None = None) -> dict:
    return {"code": code, "policy_rule_uri": f"{name or secrets.token_hex(6)}:v1-stable"}


def test_a_counter_counts_across_decisions(
    persisting: PolicyEvaluator, contexts: ContextStore
) -> None:
    counter = policy(COUNTER)
    results = [persisting.evaluate(counter, None).result for _ in range(5)]
    assert results == [1, 2, 3, 4, 5]
    assert contexts.get(counter["policy_rule_uri"]) == {"count": 5}
    slot = contexts.load(counter["policy_rule_uri"], None)
    assert slot.version == 5


def test_instance_attributes_do_not_persist(persisting: PolicyEvaluator) -> None:
    code = """\
class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        self.count = 0

    def eval(self, parameters, input_data, context):
        self.count = self.count + 1
        context["count"] = context.get("count", 0) + 1
        return [self.count, context["count"]]
"""
    document = policy(code)
    assert persisting.evaluate(document, None).result == [1, 1]
    assert persisting.evaluate(document, None).result == [1, 2]


def test_contexts_of_policies_and_clusters_are_isolated(
    persisting: PolicyEvaluator, contexts: ContextStore
) -> None:
    first, second = policy(COUNTER), policy(COUNTER)
    for _ in range(3):
        persisting.evaluate(first, None, cluster_id="west")
    persisting.evaluate(first, None, cluster_id="east")
    persisting.evaluate(second, None, cluster_id="west")
    persisting.evaluate(first, None)
    assert contexts.get(first["policy_rule_uri"], "west") == {"count": 3}
    assert contexts.get(first["policy_rule_uri"], "east") == {"count": 1}
    assert contexts.get(first["policy_rule_uri"]) == {"count": 1}
    assert contexts.get(second["policy_rule_uri"], "west") == {"count": 1}
    assert contexts.get(second["policy_rule_uri"], "east") == {}
    # A policy never sees another's context, whatever key it reads.
    reader = policy(eval_body("return sorted(context)"))
    assert persisting.evaluate(reader, None, cluster_id="west").result == ["policy_rule_uri"]


def test_a_decision_that_fails_stores_nothing(
    persisting: PolicyEvaluator, contexts: ContextStore
) -> None:
    counter = policy(COUNTER)
    assert persisting.evaluate(counter, None).result == 1
    failed = persisting.evaluate(counter, "fail")
    assert failed.error_type == "PolicyError"
    schema_checked = {**counter, "policy_output_schema": {"type": "string"}}
    assert persisting.evaluate(schema_checked, None).error_type == "InvalidOutput"
    # the same policy URI, code that changes the context and then runs out of time
    timed_out = {**counter, "code": eval_body('context["count"] = 99\nwhile True:\n    pass')}
    slow = persisting.evaluate(timed_out, None, settings={"timeout_seconds": 0.3})
    assert slow.error_type == "Timeout"
    assert contexts.get(counter["policy_rule_uri"]) == {"count": 1}
    assert persisting.evaluate(counter, None).result == 2


def test_a_context_over_the_limit_fails_and_stores_nothing(
    persisting: PolicyEvaluator, contexts: ContextStore
) -> None:
    code = eval_body(
        """
        context["count"] = context.get("count", 0) + 1
        if input_data:
            context["blob"] = "x" * input_data
        return context["count"]
        """
    )
    document = policy(code)
    assert persisting.evaluate(document, None).result == 1
    outcome = persisting.evaluate(document, 5000)
    assert outcome.error_type == "InvalidOutput"
    message = outcome.error["message"]
    assert "1024 bytes" in message and "AIOS_POLICY_CONTEXT_MAX_BYTES" in message
    assert contexts.get(document["policy_rule_uri"]) == {"count": 1}
    assert persisting.evaluate(document, 100).result == 2


def test_a_context_that_is_not_json_names_its_key_path(
    persisting: PolicyEvaluator, contexts: ContextStore
) -> None:
    code = eval_body(
        """
        import datetime
        context["seen"] = [{"when": datetime.date(2024, 1, 1)}]
        return 1
        """
    )
    document = policy(code)
    outcome = persisting.evaluate(document, None)
    assert outcome.error_type == "InvalidOutput"
    assert 'context["seen"][0]["when"]: date is not JSON' in outcome.error["message"]
    assert contexts.get(document["policy_rule_uri"]) == {}


def test_the_caller_context_is_laid_over_the_stored_one(
    persisting: PolicyEvaluator, contexts: ContextStore
) -> None:
    code = eval_body(
        """
        context["count"] = context.get("count", 0) + 1
        return [context["count"], context.get("hint"), context["policy_rule_uri"]]
        """
    )
    document = policy(code)
    uri = document["policy_rule_uri"]
    assert persisting.evaluate(document, None).result == [1, None, uri]
    assert persisting.evaluate(document, None, context={"hint": "h", "count": 10}).result == [
        11,
        "h",
        uri,
    ]
    # what the policy changed is stored; neither what the caller supplied and the policy
    # left as it was, nor the runtime's own key
    assert contexts.get(uri) == {"count": 11}
    assert persisting.evaluate(document, None).result == [12, None, uri]


def test_a_caller_cannot_write_a_policy_context_through_the_request(
    persisting: PolicyEvaluator, contexts: ContextStore
) -> None:
    code = eval_body(
        """
        context["count"] = context.get("count", 0) + 1
        return context.get("allow", False)
        """
    )
    document = policy(code)
    uri = document["policy_rule_uri"]
    assert persisting.evaluate(document, None).result is False
    forged = persisting.evaluate(document, None, context={"allow": True, "extra": [1]})
    assert forged.result is True  # the decision sees it...
    assert contexts.get(uri) == {"count": 2}  # ...but it is not kept
    assert persisting.evaluate(document, None).result is False


def test_an_unchanged_context_is_not_written(
    persisting: PolicyEvaluator, contexts: ContextStore
) -> None:
    reader = policy(eval_body("return context.get('count', 0)"))
    for _ in range(3):
        assert persisting.evaluate(reader, None).result == 0
    assert contexts.collection.count_documents({"policy_rule_uri": reader["policy_rule_uri"]}) == 0


def test_only_policies_that_use_their_context_touch_the_store(
    persisting: PolicyEvaluator, contexts: ContextStore
) -> None:
    unaware = policy(eval_body("return input_data"))
    assert persisting.evaluate(unaware, 7).result == 7
    assert contexts.collection.count_documents({"policy_rule_uri": unaware["policy_rule_uri"]}) == 0
    renamed = policy(
        "class AIOSv1PolicyRule:\n"
        "    def __init__(self, rule_id, settings, parameters):\n"
        "        pass\n"
        "    def eval(self, parameters, input_data, ctx):\n"
        "        ctx['n'] = ctx.get('n', 0) + 1\n"
        "        return ctx['n']\n"
    )
    assert [persisting.evaluate(renamed, None).result for _ in range(3)] == [1, 2, 3]
    inherited = policy(
        "class Base:\n"
        "    def __init__(self, rule_id, settings, parameters):\n"
        "        pass\n"
        "    def eval(self, parameters, input_data, context):\n"
        "        context['n'] = context.get('n', 0) + 1\n"
        "        return context['n']\n"
        "class AIOSv1PolicyRule(Base):\n"
        "    pass\n"
    )
    assert [persisting.evaluate(inherited, None).result for _ in range(2)] == [1, 2]


class _RacedStore(ContextStore):
    """A store that another decision always beats: before each store, it writes the
    context itself, as a decision on another replica would."""

    def store(self, slot: ContextSlot, state: dict) -> bool:
        rival = ContextStore(self.collection.database, self.max_bytes)
        current = rival.load(slot.policy_rule_uri, slot.cluster_id or None)
        rival.store(current, {"rival": current.version + 1})
        return super().store(slot, state)


def test_a_decision_that_keeps_losing_the_race_fails_clearly(
    pool: WorkerPool, client: MongoClient
) -> None:
    raced = _RacedStore(client[f"context_{secrets.token_hex(4)}"])
    evaluator = PolicyEvaluator(pool, LimitsConfig(), raced)
    counter = policy(COUNTER)
    outcome = evaluator.evaluate(counter, None, cluster_id="c1")
    assert outcome.error_type == "PolicyError"
    message = outcome.error["message"]
    assert f"changed by other decisions {CONTEXT_ATTEMPTS} times" in message
    assert "on cluster 'c1'" in message and "Retry the decision" in message
    assert "count" not in raced.get(counter["policy_rule_uri"], "c1")


# -- through the real service ---------------------------------------------------------------


@pytest.fixture(scope="module")
def second_server(
    embedded_db: EmbeddedDatabase, server: RuntimeServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeServer]:
    """Another replica on the same database, with the same token."""
    log_path = tmp_path_factory.mktemp("replica") / "server.log"
    replica = RuntimeServer(embedded_db.uri, server.token, log_path).start()
    yield replica
    replica.stop()


def test_concurrent_decisions_on_two_replicas_lose_no_update(
    server: RuntimeServer, second_server: RuntimeServer, client: MongoClient, unique_name: str
) -> None:
    with server.client() as api:
        published = api.post(
            "/policies", json={"name": unique_name, "version": "v1", "code": COUNTER}
        )
        assert published.status_code == 201, published.text
    uri = published.json()["policy_rule_uri"]
    calls = 24

    def decide(index: int) -> httpx.Response:
        replica = (server, second_server)[index % 2]
        with replica.client() as api:
            return api.post(
                f"/policies/{uri}/eval", json={"input_data": index, "cluster_id": "cluster-a"}
            )

    with ThreadPoolExecutor(max_workers=12) as threads:
        answers = list(threads.map(decide, range(calls)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert sorted(a.json()["result"] for a in answers) == list(range(1, calls + 1))
    stored = ContextStore(client["aios_test"]).load(uri, "cluster-a")
    assert stored.state == {"count": calls}
    assert stored.version == calls
    # Another cluster, and no cluster at all, start from their own empty contexts.
    with second_server.client() as api:
        other = api.post(f"/policies/{uri}/eval", json={"cluster_id": "cluster-b"})
        none = api.post(f"/policies/{uri}/eval", json={})
    assert other.json()["result"] == 1 and none.json()["result"] == 1
    assert client["aios_test"][COLLECTION].count_documents({"policy_rule_uri": uri}) == 3


def test_a_failing_decision_through_the_service_stores_nothing(
    server: RuntimeServer, client: MongoClient, unique_name: str
) -> None:
    with server.client() as api:
        published = api.post(
            "/policies", json={"name": unique_name, "version": "v1", "code": COUNTER}
        )
        uri = published.json()["policy_rule_uri"]
        assert api.post(f"/policies/{uri}/eval", json={"cluster_id": "c"}).json()["result"] == 1
        failed = api.post(f"/policies/{uri}/eval", json={"input_data": "fail", "cluster_id": "c"})
        assert failed.status_code == 422 and failed.json()["error"]["type"] == "PolicyError"
        assert api.post(f"/policies/{uri}/eval", json={"cluster_id": "c"}).json()["result"] == 2


def test_module_state_never_crosses_clusters() -> None:
    """A decision names its cluster to the worker: the policy's module state (not
    persisted, see the README) is one per policy and cluster, like its context. One
    worker, so that both decisions run in the same process."""
    stash = policy(eval_body(
        """
        SEEN.append(input_data)
        return list(SEEN)
        """,
        prelude="SEEN = []",
    ))
    with WorkerPool(1, max_memory_mb=512) as single:
        evaluator = PolicyEvaluator(single, LimitsConfig(default_timeout_seconds=2.0))
        assert evaluator.evaluate(stash, "west-secret", cluster_id="west").result == [
            "west-secret"]
        assert evaluator.evaluate(stash, "east", cluster_id="east").result == ["east"]
        assert evaluator.evaluate(stash, "west-2", cluster_id="west").result == [
            "west-secret", "west-2"], "the same worker kept the module of its own scope"
