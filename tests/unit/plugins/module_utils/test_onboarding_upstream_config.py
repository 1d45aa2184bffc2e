"""Upstream AIOS's onboarding config as it is: nodes.nodesData, no config.urlMap.

The fixture is our own file written with the field names of upstream's sample
(k8s/onboarding/cluster/config.json): ``nodes.nodesData``, no ``config.urlMap``,
``useGateway: false``, a ``stabilityChecker`` with only ``policyRuleURI``. The urlMap
convention is the one upstream's gateway writes when it creates a cluster's
infrastructure (cluster_controller_gateway/core/infra_automation/controller.py,
``prepare_url_map``) and its onboarding notes list (NodePorts 32300-32303, gateway 32000).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from ansible_collections.aios.platform.plugins.module_utils import onboarding
from ansible_collections.aios.platform.plugins.module_utils.cluster_document import (
    ClusterDocument,
)
from pydantic import ValidationError

HERE = Path(__file__).parent
FIXTURES = HERE.parents[1] / "fixtures"
UPSTREAM_STYLE = json.loads((FIXTURES / "upstream_style_cluster_config.json").read_text())
NODES = json.loads((FIXTURES / "kubectl_get_nodes.json").read_text())["items"]


def test_the_fixture_has_upstreams_shape() -> None:
    assert UPSTREAM_STYLE["nodes"] == {"nodesData": []}
    assert "urlMap" not in UPSTREAM_STYLE["config"]
    assert UPSTREAM_STYLE["config"]["useGateway"] is False


def test_without_the_gateway_each_service_has_its_node_port() -> None:
    config, assumed = onboarding.normalise_config(UPSTREAM_STYLE)
    expected = {
        "controllerService": "http://198.51.100.23:32300",
        "metricsService": "http://198.51.100.23:32301",
        "blocksQuery": "http://198.51.100.23:32302",
        "publicGateway": "http://198.51.100.23:32000",
        "parameterUpdater": "http://198.51.100.23:32303",
        "membershipServer": "http://198.51.100.23:30501",
    }
    assert assumed == {"config.urlMap": expected}
    assert config["config"]["urlMap"] == expected
    assert config["nodes"] == {"nodeData": []}, "nodesData is read as nodeData"
    assert UPSTREAM_STYLE["nodes"] == {"nodesData": []}, "the given config is not changed"


def test_with_the_gateway_each_service_has_its_path() -> None:
    config = copy.deepcopy(UPSTREAM_STYLE)
    del config["config"]["useGateway"]  # upstream's default is the gateway
    config["config"]["publicHostname"] = "edge7.example.org"
    assumed = onboarding.normalise_config(config)[1]
    assert assumed["config.urlMap"] == {
        "controllerService": "http://edge7.example.org:32000/controller",
        "metricsService": "http://edge7.example.org:32000/metrics",
        "blocksQuery": "http://edge7.example.org:32000/blocks",
        "publicGateway": "http://edge7.example.org:32000",
        "parameterUpdater": "http://edge7.example.org:32000/mgmt",
    }


def test_a_given_url_map_is_kept_and_nothing_is_assumed() -> None:
    config = copy.deepcopy(UPSTREAM_STYLE)
    given = {k: "http://controller.internal:4000" for k in
             ("controllerService", "metricsService", "blocksQuery", "publicGateway",
              "parameterUpdater")}
    config["config"]["urlMap"] = given
    normalised, assumed = onboarding.normalise_config(config)
    assert assumed == {} and normalised["config"]["urlMap"] == given


def test_a_scheme_or_trailing_slash_in_the_hostname_is_not_doubled() -> None:
    assert onboarding.url_map_for("https://edge7.example.org/", True)["publicGateway"] == (
        "http://edge7.example.org:32000")


def test_the_registry_model_accepts_the_built_document() -> None:
    config = onboarding.normalise_config(UPSTREAM_STYLE)[0]
    document = onboarding.build_document(config, NODES)[0]
    model = ClusterDocument.model_validate(document)
    dumped = model.model_dump(mode="json")
    assert dumped["config"]["urlMap"]["membershipServer"] == "http://198.51.100.23:30501"
    assert dumped["config"]["stabilityChecker"]["policyRuleURI"] == "edge-stability:0.1-stable"
    assert dumped["nodes"]["count"] == len(NODES) and dumped["reputation"] == 3


@pytest.mark.parametrize(
    ("change", "location"),
    [
        # Without a hostname nothing can be derived: the model names both fields.
        (lambda c: c["config"].pop("publicHostname"), ("config", "publicHostname")),
        (lambda c: c["config"].pop("publicHostname"), ("config", "urlMap")),
        # A partial map is not completed: it is the owner's, and invalid.
        (lambda c: c["config"].update(urlMap={"controllerService": "http://x:1"}),
         ("config", "urlMap", "metricsService")),
        # The alias does not open the door to other unknown fields.
        (lambda c: c["nodes"].update(nodeDatas=[]), ("nodes", "nodeDatas")),
        (lambda c: c["config"]["urlMap"].update(membershipServer=5)
         if "urlMap" in c["config"] else c["config"].update(
             urlMap={**onboarding.url_map_for("h", True), "membershipServer": 5}),
         ("config", "urlMap", "membershipServer")),
    ],
)
def test_what_cannot_be_derived_is_still_refused(change, location: tuple) -> None:
    config = copy.deepcopy(UPSTREAM_STYLE)
    change(config)
    config = onboarding.normalise_config(config)[0]
    document = dict(config)  # the nodes as given: no Kubernetes here
    document.update(onboarding.aggregate([]))
    if "nodeDatas" in (config.get("nodes") or {}):
        document["nodes"] = config["nodes"]
    with pytest.raises(ValidationError) as info:
        ClusterDocument.model_validate(document)
    assert location in [tuple(e["loc"]) for e in info.value.errors()]
