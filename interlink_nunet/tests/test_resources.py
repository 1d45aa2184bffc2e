"""Consolidation of the peers dump, resource names, and the node's resources."""

from __future__ import annotations

import pytest
from conftest import fixture

from interlink_nunet.names import check_prefix, extended_resource_name, gpu_resource_name
from interlink_nunet.resources import consolidate

SEED_PEERS = fixture("seed_peers.json")

# The seed's worked example: the table the plugin answers at /resources. The seed's table
# says 5 RTX 3080s, but its peers dump lists four (one peer: 3080, 3090, 3090, 3080, 3080,
# 3080); the count here is the dump's. Every other figure is the seed's.
SEED_TABLE = {
    "gpu.nvidia.rtx.3080.10gb": 4,
    "gpu.nvidia.rtx.3090.24gb": 2,
    "gpu.nvidia.tesla.p100.16gb": 3,
    "cpu.cores": 17,
    "cpu.mhz": 114299,
    "ram.mib": 113855,
}


@pytest.mark.parametrize(("model", "vram", "name"), [
    ("NVIDIA GeForce RTX 3080", 10240, "gpu.nvidia.rtx.3080.10gb"),
    ("NVIDIA GeForce RTX 3090", 24576, "gpu.nvidia.rtx.3090.24gb"),
    ("Tesla P100-PCIE-16GB", 16384, "gpu.nvidia.tesla.p100.16gb"),
    ("NVIDIA A100-SXM4-80GB", 81920, "gpu.nvidia.a100.80gb"),
    ("NVIDIA GeForce RTX 2070", 7982, "gpu.nvidia.rtx.2070.8gb"),
    ("NVIDIA RTX A6000", 49140, "gpu.nvidia.rtx.a6000.48gb"),
    ("AMD Radeon RX 7900 XTX", 24560, "gpu.amd.rx.7900.xtx.24gb"),
    ("Intel(R) Arc(TM) A770 Graphics", 16256, "gpu.intel.r.arc.tm.a770.16gb"),
    ("Some Accelerator 9000", 4096, "gpu.other.some.accelerator.9000.4gb"),
    ("", 8192, "gpu.other.unknown.8gb"),
    ("NVIDIA GeForce RTX 3080", 0, "gpu.nvidia.rtx.3080"),  # no VRAM: no size, not "0gb"
    ("NVIDIA GeForce RTX 3080", None, "gpu.nvidia.rtx.3080"),
])
def test_gpu_resource_names(model, vram, name) -> None:
    assert gpu_resource_name(model, vram) == name
    assert extended_resource_name("nunet.io", name) == f"nunet.io/{name}"


def test_a_very_long_model_name_stays_within_kubernetes_limits_and_unique() -> None:
    first = gpu_resource_name("Vendor " + "Model " * 20 + "A", 1024)
    second = gpu_resource_name("Vendor " + "Model " * 20 + "B", 1024)
    assert len(first) <= 63 and first != second
    extended_resource_name("nunet.io", first)


@pytest.mark.parametrize("prefix", ["", "Nunet.io", "nunet_io", "-nunet.io", "kubernetes.io",
                                    "foo.k8s.io", "a" * 254])
def test_bad_prefixes_are_refused(prefix) -> None:
    with pytest.raises(ValueError):
        check_prefix(prefix)


@pytest.mark.parametrize("name", ["", "gpu/x", "-gpu", "gpu.", "x" * 64, "gpu x"])
def test_bad_names_are_refused(name) -> None:
    with pytest.raises(ValueError, match="not a valid resource name"):
        extended_resource_name("nunet.io", name)


def test_the_seeds_worked_example() -> None:
    # The seed's table counts the GPU peers: the three P100s of a peer that is not available
    # and, of the CPU figures, only the GPU peer's. That is this plugin's capacity of a
    # GPU-only node; its allocatable leaves the unavailable peer out.
    gpu_node = consolidate(SEED_PEERS, gpu_only=True)
    assert gpu_node.capacity.table() == SEED_TABLE
    allocatable = gpu_node.allocatable.table()
    assert "gpu.nvidia.tesla.p100.16gb" not in allocatable
    assert allocatable == {k: v for k, v in SEED_TABLE.items() if "p100" not in k}


def test_all_peers_node_counts_the_cpu_only_peer() -> None:
    node = consolidate(SEED_PEERS)
    assert node.allocatable.table() == {
        "gpu.nvidia.rtx.3080.10gb": 4, "gpu.nvidia.rtx.3090.24gb": 2,
        "cpu.cores": 18, "cpu.mhz": 118299, "ram.mib": 117855,
    }
    assert node.capacity.peers == 3 and node.allocatable.peers == 2


def test_node_status_in_kubernetes_terms() -> None:
    status = consolidate(SEED_PEERS, gpu_only=True).node_status("nunet.io", pods=110)
    assert status["capacity"] == {
        "cpu": "17", "memory": "113855Mi", "pods": "110", "nunet.io/cpu.mhz": "114299",
        "nunet.io/gpu.nvidia.rtx.3080.10gb": "4", "nunet.io/gpu.nvidia.rtx.3090.24gb": "2",
        "nunet.io/gpu.nvidia.tesla.p100.16gb": "3",
    }
    # Allocatable names every kind of the capacity, at 0 where no available peer has it.
    assert status["allocatable"]["nunet.io/gpu.nvidia.tesla.p100.16gb"] == "0"
    assert status["allocatable"]["nunet.io/gpu.nvidia.rtx.3080.10gb"] == "4"


def test_ping_answer_is_what_the_virtual_kubelet_reads() -> None:
    answer = consolidate(SEED_PEERS, gpu_only=True).ping_resources("example.org", pods=50)
    assert answer["cpu"] == "17" and answer["memory"] == "113855Mi" and answer["pods"] == "50"
    assert {"resourceType": "example.org/gpu.nvidia.rtx.3090.24gb", "available": "2"} in \
        answer["accelerators"]
    assert all(a["available"].isdigit() for a in answer["accelerators"])


@pytest.mark.parametrize(("peers", "table"), [
    ([], {"cpu.cores": 0, "cpu.mhz": 0, "ram.mib": 0}),
    ([{"peer_id": "a", "is_available": True, "has_gpu": False, "gpu_info": None,
       "available_resources": {"vcpu": 4, "tot_cpu_hz": 8000, "ram": 16000}}],
     {"cpu.cores": 4, "cpu.mhz": 8000, "ram.mib": 16000}),
    # no available_resources at all, GPUs with zero VRAM and odd names
    ([{"peer_id": "b", "is_available": True, "has_gpu": True, "available_resources": None,
       "gpu_info": [{"name": "NVIDIA GeForce RTX 3080", "tot_vram": 0},
                    {"name": "Mystery Card", "tot_vram": 2048}]}],
     {"gpu.nvidia.rtx.3080": 1, "gpu.other.mystery.card.2gb": 1,
      "cpu.cores": 0, "cpu.mhz": 0, "ram.mib": 0}),
    # unavailable peers are left out of what can be scheduled
    ([{"peer_id": "c", "is_available": False, "has_gpu": True,
       "gpu_info": [{"name": "Tesla T4", "tot_vram": 15360}],
       "available_resources": {"vcpu": 8, "tot_cpu_hz": 1, "ram": 1}}],
     {"cpu.cores": 0, "cpu.mhz": 0, "ram.mib": 0}),
    # fields DMS may add or leave out do not matter
    ([{"is_available": True, "extra": {"x": 1}}], {"cpu.cores": 0, "cpu.mhz": 0, "ram.mib": 0}),
])
def test_edge_cases(peers, table) -> None:
    assert consolidate(peers).allocatable.table() == table


def test_a_malformed_dump_is_an_error_naming_the_field() -> None:
    with pytest.raises(ValueError, match="available_resources"):
        consolidate([{"peer_id": "x", "available_resources": "lots"}])
