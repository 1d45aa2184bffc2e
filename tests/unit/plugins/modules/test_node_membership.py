"""node_membership: a node's nodeData document from recorded host facts and GPU facts.

The facts are tests/unit/fixtures/host_facts (see its README for what was recorded, where
and how); the GPUs are parsed from the nvidia-smi query outputs of
tests/unit/plugins/module_utils/nvidia_smi_cases.yml. Every document must be one that the
registry stores: it is validated with the policy runtime's NodeData model.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from ansible_collections.aios.platform.plugins.module_utils import gpu
from ansible_collections.aios.platform.plugins.modules import node_membership
from policy_runtime.clusters.document import NodeData

UNIT = Path(__file__).resolve().parents[2]
FACTS = UNIT / "fixtures" / "host_facts"
SMI = {
    case["name"]: case["output"]
    for case in yaml.safe_load(
        (UNIT / "plugins" / "module_utils" / "nvidia_smi_cases.yml").read_text()
    )
}


def recorded(name: str) -> dict:
    return json.loads((FACTS / name).read_text())


def vm() -> dict:
    """The recorded virtual machine: 2 vCPUs, 24105 MB, no swap, one virtio disk and NIC."""
    return recorded("vm_no_gpu.json")


def kubernetes_node() -> dict:
    """The recorded VM with the recorded container, overlay and bridge interfaces added."""
    facts, added = vm(), recorded("kubernetes_virtual_interfaces.json")
    return {**facts, **added, "interfaces": facts["interfaces"] + added["interfaces"]}


def gpus_of(case: str) -> dict:
    return gpu.gpus_block(gpu.parse_gpus(SMI[case]))


NO_GPUS = {"count": 0, "memory": 0, "gpus": [], "features": [], "modelNames": []}
VM_NODE = {
    "vcpus": {"count": 2},
    "memory": 24105,
    "swap": 0,
    # vda, 536870912 sectors of 512 bytes; the loop devices and zram0 are no disks.
    "storage": {"disks": 1, "size": 262144},
    # eth0 (virtio, pciid virtio2); ifb0 and ifb1 are virtual. virtio reports no link
    # speed (-1), so the bandwidths are 0.
    "network": {"interfaces": 1, "txBandwidth": 0, "rxBandwidth": 0},
}


def registry_accepts(document: dict) -> None:
    assert NodeData.model_validate(document).model_dump() == document


@pytest.mark.parametrize("gpus", [None, gpus_of("no GPU")], ids=["no gpus block", "nvidia-smi"])
def test_node_without_gpus(gpus: dict | None) -> None:
    document = node_membership.node_document("worker-1", vm(), gpus)
    assert document == {"id": "worker-1", "gpus": NO_GPUS, **VM_NODE}
    registry_accepts(document)


def test_node_with_one_t4() -> None:
    document = node_membership.node_document("gpu-1", vm(), gpus_of("one T4"))
    assert document == {
        "id": "gpu-1",
        "gpus": {
            "count": 1,
            "memory": 15360,
            "gpus": [{"modelName": "Tesla T4", "memory": 15360}],
            "features": ["fp16", "tensor_cores"],
            "modelNames": ["Tesla T4"],
        },
        **VM_NODE,
    }
    registry_accepts(document)


def test_node_with_eight_h100() -> None:
    document = node_membership.node_document("gpu-8", vm(), gpus_of("eight H100 with MIG on one"))
    h100 = {"modelName": "NVIDIA H100 80GB HBM3", "memory": 81559}
    assert document == {
        "id": "gpu-8",
        "gpus": {
            "count": 8,
            "memory": 652472,
            "gpus": [h100] * 8,
            "features": ["fp16", "tensor_cores", "fp8", "mig"],
            "modelNames": ["NVIDIA H100 80GB HBM3"],
        },
        **VM_NODE,
    }
    registry_accepts(document)


def test_container_overlay_and_bridge_interfaces_are_not_counted() -> None:
    facts = kubernetes_node()
    assert len(facts["interfaces"]) == 13
    assert [name for name, _item in node_membership.physical_interfaces(facts)] == ["eth0"]
    document = node_membership.node_document("worker-1", facts, gpus_of("one T4"))
    # Not 12 interfaces and 6250 MB/s: the veths and bridges report 10000 Mb/s each.
    assert document["network"] == {"interfaces": 1, "txBandwidth": 0, "rxBandwidth": 0}
    assert {k: document[k] for k in VM_NODE} == VM_NODE
    registry_accepts(document)


def test_the_virtual_interfaces_alone_are_no_network_card() -> None:
    facts = recorded("kubernetes_virtual_interfaces.json")
    assert node_membership.network_of(facts) == {
        "interfaces": 0,
        "txBandwidth": 0,
        "rxBandwidth": 0,
    }


def test_a_bond_counts_once_with_its_speed() -> None:
    # Written in the shape of Ansible's Linux network facts (a bond, its two members, a
    # VLAN on it, an ipip tunnel and kube-proxy's dummy device); this host's kernel
    # cannot create bonds, tunnels or dummies, so none of these is recorded.
    facts = copy.deepcopy(vm())
    facts["interfaces"] += ["bond0", "ens1f0", "ens1f1", "bond0.100", "tunl0", "kube-ipvs0"]
    facts["eth0"]["speed"] = 1000
    facts["bond0"] = {
        "device": "bond0",
        "type": "bonding",
        "slaves": ["ens1f0", "ens1f1"],
        "mode": "802.3ad",
        "speed": 50000,
    }
    for name in ("ens1f0", "ens1f1"):
        facts[name] = {
            "device": name,
            "type": "ether",
            "pciid": f"0000:3b:00.{name[-1]}",
            "module": "mlx5_core",
            "perm_macaddress": f"02:00:00:00:02:0{name[-1]}",
            "speed": 25000,
        }
    facts["bond0.100"] = {"device": "bond0.100", "type": "ether", "speed": 50000}
    facts["tunl0"] = {"device": "tunl0", "type": "unknown"}
    facts["kube_ipvs0"] = {"device": "kube-ipvs0", "type": "ether"}
    names = [name for name, _item in node_membership.physical_interfaces(facts)]
    assert names == ["bond0", "eth0"]
    assert node_membership.network_of(facts) == {
        "interfaces": 2,
        "txBandwidth": 6375,
        "rxBandwidth": 6375,
    }


def test_names_decide_when_the_facts_have_no_interface_details() -> None:
    facts = {
        "interfaces": [
            "lo",
            "eno1",
            "ib0",
            "docker0",
            "veth1a2b",
            "cni0",
            "flannel.1",
            "cali0c1d",
            "vxlan.calico",
            "tunl0",
            "kube-ipvs0",
            "virbr0",
            "br-0a1b",
            "wg0",
        ]
    }
    assert node_membership.network_of(facts)["interfaces"] == 2


@pytest.mark.parametrize(
    ("key", "name"), [("br_6c0d9e8f7a1b", "br-6c0d9e8f7a1b"), ("flannel.1", "flannel.1")]
)
def test_interface_facts_are_found_under_ansibles_key(key: str, name: str) -> None:
    facts = recorded("kubernetes_virtual_interfaces.json")
    assert key in facts
    assert node_membership.interface_facts(facts, name)["device"] == name
