"""Resource consolidation: what the NuNet peers offer, as one Kubernetes node.

From DMS's peers dump (``GET /api/v1/peers/dht/dump``) count GPUs by vendor, model and
VRAM, and sum CPU cores, CPU MHz and RAM. ``capacity`` counts every selected peer,
``allocatable`` only those DMS reports available. ``gpu_only`` selects the peers with GPUs,
for a virtual node that offers GPU compute only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter

from interlink_nunet.names import extended_resource_name, gpu_resource_name


class PeerGpu(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = ""
    tot_vram: float = 0
    free_vram: float = 0


class PeerResources(BaseModel):
    model_config = ConfigDict(extra="ignore")
    tot_cpu_hz: float = 0  # DMS names it hz; the values are MHz
    ram: float = 0  # MiB
    vcpu: float = 0


class Peer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    peer_id: str = ""
    is_available: bool = False
    has_gpu: bool = False
    gpu_info: list[PeerGpu] | None = None
    available_resources: PeerResources | None = None


PEERS = TypeAdapter(list[Peer])


@dataclass(frozen=True)
class GpuModel:
    """What a GPU resource name stands for, to ask DMS for that card."""

    vendor: str
    model: str
    vram_mib: float


@dataclass
class Totals:
    gpus: Counter = field(default_factory=Counter)
    cpu_cores: int = 0
    cpu_mhz: int = 0
    ram_mib: int = 0
    peers: int = 0

    def add(self, peer: Peer, gpu_names: list[str]) -> None:
        resources = peer.available_resources or PeerResources()
        self.gpus.update(gpu_names)
        self.cpu_cores += int(resources.vcpu)
        self.cpu_mhz += int(resources.tot_cpu_hz)
        self.ram_mib += int(resources.ram)
        self.peers += 1

    def table(self) -> dict[str, int]:
        """The un-prefixed table of ``GET /resources``."""
        return {
            **dict(sorted(self.gpus.items())),
            "cpu.cores": self.cpu_cores,
            "cpu.mhz": self.cpu_mhz,
            "ram.mib": self.ram_mib,
        }


@dataclass
class Consolidated:
    capacity: Totals
    allocatable: Totals
    models: dict[str, GpuModel]  # resource name -> the card it stands for

    def node_resources(self, prefix: str, pods: int, allocatable: bool = True) -> dict[str, str]:
        """Kubernetes node ``capacity`` or ``allocatable``: cpu, memory, pods, extended."""
        totals = self.allocatable if allocatable else self.capacity
        resources = {
            "cpu": str(totals.cpu_cores),
            "memory": f"{totals.ram_mib}Mi",
            "pods": str(pods),
            extended_resource_name(prefix, "cpu.mhz"): str(totals.cpu_mhz),
        }
        for name in sorted(self.capacity.gpus):
            resources[extended_resource_name(prefix, name)] = str(totals.gpus.get(name, 0))
        return resources

    def node_status(self, prefix: str, pods: int) -> dict[str, dict[str, str]]:
        return {
            "capacity": self.node_resources(prefix, pods, allocatable=False),
            "allocatable": self.node_resources(prefix, pods, allocatable=True),
        }

    def ping_resources(self, prefix: str, pods: int) -> dict[str, Any]:
        """interLink's ping answer (``resources``): the allocatable part, as the virtual
        kubelet sets both capacity and allocatable from it."""
        resources = self.node_resources(prefix, pods)
        return {
            "cpu": resources.pop("cpu"),
            "memory": resources.pop("memory"),
            "pods": resources.pop("pods"),
            "accelerators": [
                {"resourceType": name, "available": count} for name, count in resources.items()
            ],
        }


def consolidate(peers: list[dict] | list[Peer], gpu_only: bool = False) -> Consolidated:
    parsed = PEERS.validate_python(peers)
    capacity, allocatable = Totals(), Totals()
    models: dict[str, GpuModel] = {}
    for peer in parsed:
        gpus = peer.gpu_info or []
        if gpu_only and not gpus:
            continue
        names = []
        for gpu in gpus:
            name = gpu_resource_name(gpu.name, gpu.tot_vram)
            names.append(name)
            if name not in models:
                models[name] = GpuModel(name.split(".")[1], gpu.name, gpu.tot_vram)
        capacity.add(peer, names)
        if peer.is_available:
            allocatable.add(peer, names)
    return Consolidated(capacity, allocatable, models)
