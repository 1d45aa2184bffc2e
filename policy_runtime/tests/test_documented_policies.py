"""Every policy the docs show, and every example policy, decides right on real data: nodes
and clusters made by the collection's onboarding code, the inputs the governed actions
hand their policies."""

from __future__ import annotations

import json
import re

import pytest
from conftest import EXAMPLES_DIR, REPO_ROOT
from onboarded import A100_80GB, L4_24GB, cluster, node

from policy_runtime.evaluation import PolicyEvaluator
from policy_runtime.policy_files import load_policy_path

DOCS = [REPO_ROOT / "policy_runtime" / "README.md", REPO_ROOT / "README.md",
        REPO_ROOT / "policies" / "README.md"]
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)

CPU_ONLY = node("cpu-only")
TWO_A100 = node("gpu-a100", A100_80GB, A100_80GB)
ONE_L4 = node("gpu-l4", L4_24GB)
CLUSTER = cluster("cluster-docs", TWO_A100, CPU_ONLY, node("gpu-a100-2", A100_80GB))


def documented_policies() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        if doc.is_file():
            for index, block in enumerate(_BLOCK.findall(doc.read_text())):
                if "class AIOSv1PolicyRule" in block:
                    found.append((f"{doc.relative_to(REPO_ROOT)}#{index}", block))
    return found


def add_node(new: dict) -> dict:
    """What the governed add_node hands its policy."""
    return {"cluster_id": CLUSTER["id"], "node": new, "cluster": CLUSTER}


def test_the_docs_show_policies() -> None:
    assert documented_policies()


@pytest.mark.parametrize(("where", "code"), documented_policies(),
                         ids=[w for w, _ in documented_policies()])
def test_documented_add_node_policy_decides_right_on_real_nodes(
    evaluator: PolicyEvaluator, where: str, code: str
) -> None:
    policy = {"code": code}
    gpu_less = evaluator.evaluate(policy, add_node(CPU_ONLY), parameters={"min_gpus": 2})
    assert gpu_less.ok, gpu_less.error
    assert gpu_less.result["allowed"] is False, f"{where}: a GPU-less node passed min_gpus=2"
    enough = evaluator.evaluate(policy, add_node(TWO_A100), parameters={"min_gpus": 2})
    assert enough.ok and enough.result["allowed"] is True, enough


def example(name: str) -> dict:
    return load_policy_path(EXAMPLES_DIR / name)


@pytest.mark.parametrize(
    ("new", "parameters", "allowed"),
    [
        (CPU_ONLY, {}, False),
        (TWO_A100, {"min_gpus": 2}, True),
        (ONE_L4, {}, True),  # 23034 MiB >= the default 16384 MiB
        (ONE_L4, {"min_gpu_memory_mb": 24576}, False),  # a "24 GB" card is 23034 MiB
    ],
    ids=["cpu-only", "two-a100", "l4", "l4-below-24gib"],
)
def test_add_node_example_on_onboarded_nodes(
    evaluator: PolicyEvaluator, new: dict, parameters: dict, allowed: bool
) -> None:
    outcome = evaluator.evaluate(example("add-node-gpu-minimum"), add_node(new),
                                 parameters=parameters)
    assert outcome.ok, outcome.error
    assert outcome.result["allowed"] is allowed, outcome.result["reason"]


def test_update_cluster_example_on_an_onboarded_cluster(evaluator: PolicyEvaluator) -> None:
    policy = example("update-cluster-field-guard")

    def decide(update: dict) -> dict:
        outcome = evaluator.evaluate(
            policy, {"cluster_id": CLUSTER["id"], "update": update, "cluster": CLUSTER}
        )
        assert outcome.ok, outcome.error
        return outcome.result

    assert decide({"clusterMetadata.description": "vision"})["allowed"] is True
    assert decide({"status": "dead"})["allowed"] is False


def test_remove_node_example_on_what_the_governed_action_hands_it(
    evaluator: PolicyEvaluator,
) -> None:
    """The governed remove_node gives no requested_at: the example decides on now."""
    real = {"cluster_id": CLUSTER["id"], "node_id": "cpu-only", "cluster": CLUSTER}
    outcome = evaluator.evaluate(example("remove-node-maintenance-window"), real,
                                 parameters={"min_nodes": 1, "windows": [
                                     {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                      "start": "00:00", "end": "23:59"}]})
    assert outcome.ok, outcome.error
    assert outcome.result["allowed"] is True or "23:59" in outcome.result["reason"]
    too_few = evaluator.evaluate(example("remove-node-maintenance-window"), real,
                                 parameters={"min_nodes": 3})
    assert too_few.ok and too_few.result["allowed"] is False
    assert "removal would leave 2 nodes" in too_few.result["reason"]


def test_stability_example_on_an_onboarded_cluster(evaluator: PolicyEvaluator) -> None:
    nodes_data = [
        {"id": n["id"], "ready": True, "cpu_percent": 35.0, "memory_percent": 40.0,
         "gpus": [{"health": "ok", "temperature_c": 61} for _ in n["gpus"]["gpus"]]}
        for n in CLUSTER["nodes"]["nodeData"]
    ]
    outcome = evaluator.evaluate(example("cluster-stability"),
                                 {"cluster_data": CLUSTER, "nodes_data": nodes_data})
    assert outcome.ok, outcome.error
    assert outcome.result["is_stable"] is True
    assert outcome.result["stability_check_data"]["cluster_id"] == "cluster-docs"


def test_onboarded_shapes_are_what_the_docs_say() -> None:
    """The docs' statements about real data hold for what onboarding produces."""
    assert TWO_A100["gpus"]["modelNames"] == ["NVIDIA A100-SXM4-80GB"]
    assert ONE_L4["gpus"]["gpus"] == [{"modelName": "NVIDIA L4", "memory": 23034}]
    assert CPU_ONLY["gpus"] == {"count": 0, "memory": 0, "gpus": [], "features": [],
                                "modelNames": []}
    assert json.loads(json.dumps(CLUSTER)) == CLUSTER


def test_docs_name_real_model_names_and_memory() -> None:
    text = (REPO_ROOT / "policy_runtime" / "README.md").read_text()
    assert "NVIDIA A100-SXM4-80GB" in text and "23034" in text
    shown = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", text, re.S)
             if '"gpu-node-1"' in b]
    assert shown == [node("gpu-node-1", A100_80GB, A100_80GB)]



# -- 3. what each action hands its policy, as JSON Schemas --------------------------------
def test_action_input_schemas_accept_what_the_actions_really_hand() -> None:
    from policy_runtime import schemas
    from policy_runtime.governance import inputs

    real = {
        "add_node": add_node(ONE_L4),
        "remove_node": {"cluster_id": CLUSTER["id"], "node_id": "cpu-only", "cluster": CLUSTER},
        "update_cluster": {"cluster_id": CLUSTER["id"], "update": {"tags": ["x"]},
                           "cluster": CLUSTER},
        "add_cluster": {"cluster": CLUSTER},
        "stability_check": {"cluster_data": CLUSTER, "nodes_data": [{"id": "gpu-l4"}]},
    }
    for action, value in real.items():
        schemas.validate(inputs.input_schema(action), value, what=action)
    wrong = add_node({**ONE_L4, "gpus": [{"modelName": "NVIDIA L4", "memory": 23034}]})
    with pytest.raises(Exception, match=r"input_data\.node\.gpus: .* is not of type 'object'"):
        schemas.validate(inputs.input_schema("add_node"), wrong, what="input_data")
    assert "scale_block" in inputs.names() and "create_cluster" not in inputs.names()
    assert inputs.input_schema("create_cluster") == inputs.input_schema("add_cluster")


def test_openapi_shows_the_action_inputs(api) -> None:
    document = api.get("/openapi.json").json()
    components = document["components"]["schemas"]
    add_node_input = components["AddNodeInput"]
    assert add_node_input["required"] == ["cluster_id", "node", "cluster"]
    assert add_node_input["properties"]["node"]["properties"]["gpus"]["type"] == "object"
    assert "NVIDIA A100-SXM4-80GB" in components["Node"]["description"]
    body = document["paths"]["/cluster-actions/add-node"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/Node"
    pre_check = document["paths"]["/pre-check/{action}"]["post"]["requestBody"]
    refs = {r["$ref"] for r in pre_check["content"]["application/json"]["schema"]["anyOf"]}
    assert "#/components/schemas/UpdateClusterInput" in refs


def test_aios_policy_test_checks_case_inputs_against_the_action(tmp_path) -> None:
    from test_cli import aios_policy

    directory = tmp_path / "p"
    (directory / "cases").mkdir(parents=True)
    (directory / "policy.py").write_text(
        (EXAMPLES_DIR / "add-node-gpu-minimum" / "policy.py").read_text())
    (directory / "policy.json").write_text(json.dumps(
        {"name": "x", "version": "v1", "type": "precheck", "tags": ["add_node"]}))
    handmade = {"node": {"id": "n1", "gpus": [{"modelName": "A100", "memory": 80}]}}
    (directory / "cases" / "handmade.json").write_text(json.dumps(
        {"input_data": handmade, "expected_error": "PolicyError"}))
    (directory / "cases" / "real.json").write_text(json.dumps(
        {"input_data": add_node(TWO_A100), "match": "partial", "expected": {"allowed": True}}))
    done = aios_policy("test", str(directory))
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith("FAIL cases/handmade.json: input_data.node.gpus: ")
    assert "not the shape add_node hands its policy" in lines[0]
    assert lines[1:] == ["PASS cases/real.json", "1 passed, 1 failed"]
