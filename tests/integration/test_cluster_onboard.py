"""cluster_onboard end to end: file of nodes -> populated document -> a real runtime."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
from conftest import run_collection_module
from render_site import REPO

MODULE = REPO / "plugins" / "modules" / "cluster_onboard.py"
NODES = REPO / "tests" / "unit" / "fixtures" / "kubectl_get_nodes.json"
SEED = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json").read_text())
CONFIG = {k: SEED[k] for k in ("id", "regionId", "config", "tags", "clusterMetadata")}


def run_module(args: dict, check_mode: bool = False) -> dict:
    return run_collection_module(MODULE, args, check_mode)


def test_populated_file_idempotence_and_check_mode(tmp_path: Path) -> None:
    args = {"config": CONFIG, "nodes_from": "file", "nodes_file": str(NODES),
            "dest": str(tmp_path)}
    preview = run_module(args, check_mode=True)
    assert preview["changed"] is True and not Path(preview["path"]).exists()
    first = run_module(args)
    assert first["changed"] is True and first["registered"] == "none"
    assert json.loads(Path(first["path"]).read_text()) == first["cluster"]
    assert Path(first["path"]).name == "cluster-west-vision-001_populated.json"
    assert first["cluster"]["nodes"]["count"] == 5 and first["cluster"]["gpus"]["count"] == 3
    warning = "node aios-worker-3: annotation gpu.aios/info is not JSON"
    assert warning in json.dumps(first["warnings"])
    assert first["defaults"] == {"storage.disks": 1, "network.txBandwidth": 0,
                                 "network.rxBandwidth": 0}
    assert run_module(args)["changed"] is False


def test_invalid_config_names_the_field(tmp_path: Path) -> None:
    config = {**CONFIG, "clusterMetadata": {"name": "x"}}
    result = run_module({"config": config, "nodes_from": "file", "nodes_file": str(NODES),
                         "dest": str(tmp_path)})
    assert result["failed"] is True and "clusterMetadata.description" in result["msg"]
    missing = run_module({"config": CONFIG, "nodes_from": "file",
                          "nodes_file": str(tmp_path / "absent.json"), "dest": str(tmp_path)})
    assert missing["failed"] is True and "cannot read nodes file" in missing["msg"]


def test_onboard_creates_then_changes_nothing_then_updates(
    runtime: tuple[str, str], tmp_path: Path
) -> None:
    url, token = runtime
    config = {**CONFIG, "id": f"onboard-{secrets.token_hex(4)}"}
    args = {"config": config, "nodes_from": "file", "nodes_file": str(NODES),
            "dest": str(tmp_path), "onboard": True, "api_url": url, "api_token": token}
    created = run_module(args)
    assert created.get("registered") == "created", created
    stored = httpx.get(f"{url}/clusters/{config['id']}",
                       headers={"Authorization": f"Bearer {token}"}).json()
    assert stored == created["cluster"]
    again = run_module(args)
    assert again["changed"] is False and again["registered"] == "unchanged"
    retagged = run_module({**args, "config": {**config, "tags": ["gpu", "retagged"]}})
    assert retagged["registered"] == "unchanged" and retagged["cluster"]["tags"] == config["tags"]
    assert "other values of tags than the config" in json.dumps(retagged["warnings"])
    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps({"items": json.loads(NODES.read_text())["items"][:2]}))
    refreshed = run_module({**args, "nodes_file": str(fewer)})
    assert refreshed["registered"] == "updated" and refreshed["cluster"]["nodes"]["count"] == 2
    assert refreshed["cluster"]["clusterMetadata"] == stored["clusterMetadata"]
    refused = run_module({**args, "api_token": "wrong"})
    assert refused["failed"] is True and "401" in refused["msg"]


UPSTREAM_STYLE = REPO / "tests" / "unit" / "fixtures" / "upstream_style_cluster_config.json"


def test_upstream_style_config_file_is_onboarded_as_it_is(
    runtime: tuple[str, str], tmp_path: Path
) -> None:
    """Upstream's sample config (k8s/onboarding/cluster/config.json) has nodes.nodesData and
    no config.urlMap; onboard.py fills in the nodes and posts it. Our fixture has the same
    field names: the module takes the file unchanged, derives the urlMap from
    publicHostname (useGateway false: upstream's NodePorts) and reports it in assumed."""
    config = json.loads(UPSTREAM_STYLE.read_text())
    config["id"] = f"edge-{secrets.token_hex(4)}"
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config))
    url, token = runtime
    args = {"config_file": str(config_file), "nodes_from": "file", "nodes_file": str(NODES),
            "dest": str(tmp_path), "onboard": True, "api_url": url, "api_token": token}
    created = run_module(args)
    assert created.get("registered") == "created", created
    derived = created["assumed"]["config.urlMap"]
    assert derived["controllerService"] == "http://198.51.100.23:32300"
    assert derived["parameterUpdater"] == "http://198.51.100.23:32303"
    stored = httpx.get(f"{url}/clusters/{config['id']}",
                       headers={"Authorization": f"Bearer {token}"}).json()
    assert stored["config"]["urlMap"] == derived
    assert stored["nodes"]["count"] == 5 and "nodesData" not in stored["nodes"]
    assert stored["config"]["stabilityChecker"]["policyRuleURI"] == "edge-stability:0.1-stable"
    again = run_module(args)
    assert again["registered"] == "unchanged" and again["changed"] is False
    assert not any("other values" in w for w in again.get("warnings", [])), again


def test_a_given_url_map_means_nothing_is_assumed(tmp_path: Path) -> None:
    result = run_module({"config": CONFIG, "nodes_from": "file", "nodes_file": str(NODES),
                         "dest": str(tmp_path)})
    assert result["assumed"] == {}
    assert result["cluster"]["config"]["urlMap"] == SEED["config"]["urlMap"]
