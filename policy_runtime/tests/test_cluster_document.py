"""The cluster document model against the seed's example and its rules."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import SEED_CLUSTER
from pydantic import ValidationError

from policy_runtime.clusters.document import ClusterDocument, NodeData, aggregate

SEED = json.loads(SEED_CLUSTER.read_text())


def test_the_seed_example_validates_unchanged() -> None:
    model = ClusterDocument.model_validate(SEED)
    dumped = model.model_dump(mode="json", exclude_defaults=True)
    assert dumped["nodes"] == SEED["nodes"]
    assert dumped["memory"] == 196608 and isinstance(dumped["memory"], int)
    assert model.config.policyExecutionMode == "local"


def test_the_seed_totals_are_the_sum_of_its_nodes() -> None:
    nodes = [NodeData.model_validate(n) for n in SEED["nodes"]["nodeData"]]
    totals = aggregate(nodes)
    for key in ("gpus", "vcpus", "memory", "swap", "storage", "network"):
        assert totals[key] == SEED[key], key
    assert totals["nodes"]["count"] == SEED["nodes"]["count"]


@pytest.mark.parametrize(
    ("change", "location"),
    [
        (lambda d: d.pop("status"), ("status",)),
        (lambda d: d["config"]["urlMap"].pop("publicGateway"),
         ("config", "urlMap", "publicGateway")),
        (lambda d: d["nodes"]["nodeData"][0]["gpus"].update(count=-1),
         ("nodes", "nodeData", 0, "gpus", "count")),
        (lambda d: d.update(id="bad id!"), ("id",)),
        (lambda d: d.update(statuz="live"), ("statuz",)),
        (lambda d: d["config"].update(policyExecutionMode="sometimes"),
         ("config", "policyExecutionMode")),
        (lambda d: d["config"].update(actionsEnforcement={"add_node": "maybe"}),
         ("config", "actionsEnforcement", "add_node")),
    ],
)
def test_invalid_documents_name_the_field(change, location: tuple) -> None:
    document = copy.deepcopy(SEED)
    change(document)
    with pytest.raises(ValidationError) as info:
        ClusterDocument.model_validate(document)
    assert location in [tuple(e["loc"]) for e in info.value.errors()]
