"""Onboarding logic on realistic `kubectl get nodes -o json` output; quantities as data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ansible_collections.aios.platform.plugins.module_utils import onboarding
from ansible_collections.aios.platform.plugins.module_utils.cluster_document import (
    ClusterDocument,
)
from ansible_collections.aios.platform.plugins.module_utils.quantity import parse_quantity, to_mib

HERE = Path(__file__).parent
FIXTURES = HERE.parents[1] / "fixtures"
REPO = HERE.parents[3]
NODES = json.loads((FIXTURES / "kubectl_get_nodes.json").read_text())["items"]
SEED = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json").read_text())
CONFIG = {k: SEED[k] for k in ("id", "regionId", "config", "tags", "clusterMetadata")}


@pytest.mark.parametrize(
    "case", yaml.safe_load((HERE / "quantity_cases.yml").read_text()), ids=lambda c: c["quantity"]
)
def test_quantities(case: dict) -> None:
    value = parse_quantity(case["quantity"])
    assert value == (pytest.approx(case["value"]) if case["value"] is not None else None)


def test_memory_in_mib() -> None:
    assert to_mib("16371660Ki") == 15987 and to_mib("8Gi") == 8192 and to_mib("?") is None


def test_document_from_a_kubeadm_cluster() -> None:
    document, warnings = onboarding.build_document(CONFIG, NODES)
    by_id = {n["id"]: n for n in document["nodes"]["nodeData"]}
    assert list(by_id) == ["aios-cp-1", "aios-worker-1", "aios-worker-2", "aios-worker-3",
                           "aios-worker-4"]
    assert by_id["aios-cp-1"]["gpus"]["count"] == 0, "the control plane has no annotation"
    assert by_id["aios-worker-1"]["gpus"] == {
        "count": 2, "memory": 163840, "features": [],
        "gpus": [{"modelName": "NVIDIA A100-SXM4-80GB", "memory": 81920}] * 2,
        "modelNames": ["NVIDIA A100-SXM4-80GB"],
    }
    assert by_id["aios-worker-2"]["gpus"]["features"] == ["fp8"], "a whole gpus block works"
    assert by_id["aios-worker-3"]["gpus"]["count"] == 0
    assert warnings == ["node aios-worker-3: annotation gpu.aios/info is not JSON; "
                        "counted without GPUs"]
    assert by_id["aios-worker-1"]["vcpus"] == {"count": 4}
    assert by_id["aios-worker-1"]["memory"] == 15987
    assert by_id["aios-worker-4"]["swap"] == 4096
    assert document["gpus"] == {"count": 3, "memory": 163840 + 81559}
    assert document["nodes"]["count"] == 5
    assert document["memory"] == sum(n["memory"] for n in by_id.values())
    ClusterDocument.model_validate(document)  # the registry's own model accepts it


@pytest.mark.parametrize(
    "raw", ['[{"modelName": "x"}]', '{"gpus": "many"}', "42", '[{"memory": 1}]']
)
def test_malformed_annotations_are_warnings(raw: str) -> None:
    warnings: list[str] = []
    assert onboarding.gpus_from_annotation(raw, "n1", warnings)["count"] == 0
    assert warnings and warnings[0].startswith("node n1: annotation gpu.aios/info")


def test_parser_envelope() -> None:
    assert onboarding.parser_envelope({"id": "c"}) == {
        "header": {"templateUri": "Parser/V1", "parameters": {}},
        "body": {"spec": {"values": {"id": "c"}}},
    }


def test_gathered_gpu_facts_stand_in_for_annotations() -> None:
    t4 = '[{"modelName": "Tesla T4", "memory": 15360}]'
    document, warnings = onboarding.build_document(
        CONFIG, NODES, {"aios-worker-3": t4, "aios-worker-9": t4})
    by_id = {n["id"]: n for n in document["nodes"]["nodeData"]}
    assert by_id["aios-worker-3"]["gpus"]["modelNames"] == ["Tesla T4"]
    assert by_id["aios-worker-1"]["gpus"]["count"] == 2, "nodes not given keep their annotation"
    assert warnings == ["GPU facts were given for aios-worker-9, which is not a node of the "
                        "cluster"]
    assert document["gpus"]["count"] == 4


def test_summary_table_has_a_row_per_node_and_totals() -> None:
    document = onboarding.build_document(CONFIG, NODES)[0]
    lines = onboarding.summary_table(document)
    assert lines[0].split() == ["node", "vCPUs", "memory", "MiB", "swap", "MiB", "storage", "MiB",
                                "GPUs"]
    assert len(lines) == 2 + 5 + 2
    worker_1 = next(line for line in lines if line.startswith("aios-worker-1"))
    assert worker_1.split()[1:4] == ["4", "15987", "0"]
    assert worker_1.endswith("2x NVIDIA A100-SXM4-80GB")
    assert lines[-1].startswith("total (5 nodes)") and lines[-1].endswith("3 (245399 MiB)")
    assert lines[1].split() == ["-" * 15, "-" * 5, "-" * 10, "-" * 8, "-" * 11, "-" * 24]
