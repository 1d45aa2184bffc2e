"""Every policy the docs show, and every example policy, decides right on real data: nodes
and clusters made by the collection's onboarding code, the inputs the governed actions
hand their policies."""

from __future__ import annotations

import json
import re

import pytest
from conftest import EXAMPLES_DIR, REPO_ROOT
from onboarded import A100_80GB, L4_24GB, cluster, gpu, node

from policy_runtime.evaluation import PolicyEvaluator
from policy_runtime.policy_files import load_policy_path

# Every page that shows a policy or a node's JSON: its policies run, and its node JSON is
# compared, on what the collection's onboarding code makes.
DOCS = [REPO_ROOT / "policy_runtime" / "README.md",
        REPO_ROOT / "docs" / "policy-author-guide.md",
        REPO_ROOT / "docs" / "cluster-owner-guide.md"]
_BLOCK = re.compile(r"```python\n(.*?)```", re.S)
_JSON_BLOCK = re.compile(r"```json\n(.*?)```", re.S)
# the nvidia-smi line of each GPU model the docs show
NVIDIA_SMI = {"NVIDIA A100-SXM4-80GB": A100_80GB, "NVIDIA L4": L4_24GB}

CPU_ONLY = node("cpu-only")
TWO_A100 = node("gpu-a100", A100_80GB, A100_80GB)
ONE_L4 = node("gpu-l4", L4_24GB)
CLUSTER = cluster("cluster-docs", TWO_A100, CPU_ONLY, node("gpu-a100-2", A100_80GB))


def documented_policies(docs: list = DOCS) -> list[tuple[str, str]]:
    found = []
    for doc in docs:
        for index, block in enumerate(_BLOCK.findall(doc.read_text())):
            if "class AIOSv1PolicyRule" in block:
                found.append((f"{doc.relative_to(REPO_ROOT)}#{index}", block))
    return found


def documented_gpu_json(docs: list = DOCS) -> list[tuple[str, dict]]:
    """Every JSON block that shows GPUs: a node, or a node's ``gpus`` block."""
    return [(f"{doc.relative_to(REPO_ROOT)}#{index}", json.loads(block))
            for doc in docs for index, block in enumerate(_JSON_BLOCK.findall(doc.read_text()))
            if '"modelName"' in block]


def test_every_page_with_policies_or_node_json_is_checked() -> None:
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "policy_runtime").glob("*.md")),
             *sorted((REPO_ROOT / "docs").rglob("*.md")),
             *sorted((REPO_ROOT / "policies").rglob("*.md"))]
    showing = {page for page in pages
               if documented_policies([page]) or documented_gpu_json([page])}
    assert showing == set(DOCS)


def add_node(new: dict) -> dict:
    """What the governed add_node hands its policy (upstream's keys beside ours)."""
    from policy_runtime.governance.precheck import with_upstream_keys

    return with_upstream_keys("add_node", {"cluster_id": CLUSTER["id"], "node": new,
                                           "cluster": CLUSTER})


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
    for doc in DOCS:
        text = doc.read_text()
        assert "NVIDIA A100-SXM4-80GB" in text and "23034" in text, doc
    shown = documented_gpu_json()
    assert {where.split("#")[0] for where, _ in shown} == {
        str(doc.relative_to(REPO_ROOT)) for doc in DOCS}
    for where, value in shown:
        gpus = value["gpus"] if "id" in value else value
        lines = [NVIDIA_SMI[g["modelName"]] for g in gpus["gpus"]]
        if "id" in value:  # a nodeData entry, as onboarding makes it
            assert value == node(value["id"], *lines), where
        else:  # a node's gpus block, as gpu_facts makes it
            assert value == gpu.gpus_block(gpu.parse_gpus("\n".join(lines))), where


def test_docs_show_a_gpu_less_node_as_onboarding_makes_it() -> None:
    shown = {doc: re.search(r'A node without GPUs has `"gpus": (\{.*?\})`',
                            " ".join(doc.read_text().split())) for doc in DOCS}
    shown = {doc: found for doc, found in shown.items() if found}
    assert len(shown) >= 2, "the README and the author guide show a GPU-less node"
    for doc, found in shown.items():
        assert json.loads(found.group(1)) == CPU_ONLY["gpus"], doc



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


def test_action_inputs_routes_answer_the_schemas_the_openapi_shows(api) -> None:
    from policy_runtime.governance import inputs

    components = api.get("/openapi.json").json()["components"]["schemas"]
    listed = api.get("/action-inputs")
    assert listed.status_code == 200, listed.text
    assert sorted(listed.json()) == inputs.names()
    for action, schema in listed.json().items():
        assert {k: v for k, v in schema.items() if k != "$schema"} == components[
            inputs.component_name(action)], action
        one = api.get(f"/action-inputs/{action}")
        assert one.status_code == 200 and one.json() == schema, action
    assert api.get("/action-inputs/create_cluster").json() == listed.json()["add_cluster"]
    unknown = api.get("/action-inputs/create_node")
    assert unknown.status_code == 404
    assert unknown.json()["detail"].startswith("unknown action 'create_node'; ")
    assert all(name in unknown.json()["detail"] for name in inputs.names())


def test_the_test_command_points_at_the_schema_it_checked(api, tmp_path) -> None:
    """A case of the wrong shape names GET /action-inputs/<action>, and that route answers
    the schema the case was checked against."""
    from test_cli import aios_policy

    from policy_runtime import schemas
    from policy_runtime.governance import inputs

    directory = tmp_path / "p"
    (directory / "cases").mkdir(parents=True)
    (directory / "policy.py").write_text(
        (EXAMPLES_DIR / "add-node-gpu-minimum" / "policy.py").read_text())
    (directory / "policy.json").write_text(json.dumps({"name": "x", "version": "v1",
                                                       "tags": ["gpu", "add_node"]}))
    handmade = {"node": {"id": "n1", "gpus": [{"modelName": "A100", "memory": 80}]}}
    (directory / "cases" / "handmade.json").write_text(json.dumps(
        {"input_data": handmade, "expected": {"allowed": False}}))
    done = aios_policy("test", str(directory))
    assert done.returncode == 1
    pointer = re.search(r"\(GET (/action-inputs/\w+)\)", done.stdout)
    assert pointer and pointer.group(1) == "/action-inputs/add_node", done.stdout
    answered = api.get(pointer.group(1))
    assert answered.status_code == 200
    with pytest.raises(Exception, match=r"input_data\.node\.gpus: ") as refused:
        schemas.validate(inputs.without_required(answered.json()), handmade, what="input_data")
    assert str(refused.value.message) in done.stdout


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
