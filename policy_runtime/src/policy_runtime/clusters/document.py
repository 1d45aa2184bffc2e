"""The cluster document of the clusters registry, as upstream AIOS stores it.

Field names are the upstream camelCase ones so that existing documents validate
unchanged. Only pydantic is imported here: the collection's Ansible modules validate
onboarding documents with the same model. Unknown fields are refused (a typo must not
be stored silently); the free-form parts of the document (``customPolicySystem``,
``actionsPolicyMap``, ``miscContactInfo``, ``additionalInfo``) take any JSON.

scripts/sync_cluster_model.py copies this file into the collection's module_utils; it
is written for the Python versions Ansible modules run on (typing.Union and friends, as
pydantic evaluates the annotations at run time).
"""

from __future__ import annotations

from typing import Annotated, Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_serializer, model_validator

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"

# A quantity in MB or MBps: integers stay integers (upstream's documents use them).
Amount = Annotated[Union[int, float], Field(ge=0)]


class _Strict(BaseModel):
    # NaN and Infinity are no JSON numbers: they would be stored and read back as null.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class GpuModel(_Strict):
    modelName: str = Field(min_length=1)
    memory: Amount = Field(description="memory of this GPU in MB")


class NodeGpus(_Strict):
    count: NonNegativeInt
    memory: Amount = Field(description="total GPU memory in MB")
    gpus: List[GpuModel] = Field(default_factory=list)
    features: List[str] = Field(default_factory=list)
    modelNames: List[str] = Field(default_factory=list)


class Count(_Strict):
    count: NonNegativeInt


class Storage(_Strict):
    disks: NonNegativeInt
    size: Amount = Field(description="total size in MB")


class Network(_Strict):
    interfaces: NonNegativeInt
    txBandwidth: Amount
    rxBandwidth: Amount


class NodeData(_Strict):
    id: str = Field(min_length=1)
    gpus: NodeGpus
    vcpus: Count
    memory: Amount = Field(description="MB")
    swap: Amount = Field(description="MB")
    storage: Storage
    network: Network


class Nodes(_Strict):
    count: NonNegativeInt
    nodeData: List[NodeData] = Field(default_factory=list)


class Gpus(_Strict):
    count: NonNegativeInt
    memory: Amount
    # Upstream's cluster controller sets gpus.modelNames when it adds or removes a node.
    modelNames: Optional[List[str]] = None

    @model_serializer(mode="wrap")
    def _without_unset_optionals(self, handler: Any) -> Dict[str, Any]:
        return _without_none(handler(self), ("modelNames",))


def _without_none(dumped: Any, optional: tuple) -> Any:
    """A dump without the optional fields left unset: stored documents do not grow nulls."""
    if isinstance(dumped, dict):
        for key in optional:
            if dumped.get(key) is None:
                dumped.pop(key, None)
    return dumped


class UrlMap(_Strict):
    """Where the cluster's services answer. Upstream's gateway writes the five URLs (and
    ``membershipServer``) when it creates the cluster's infrastructure and sets the map
    to ``{}`` when it removes it: an empty map means "no infrastructure" and is kept as
    it is; any other map needs the five URLs."""

    controllerService: str
    metricsService: str
    blocksQuery: str
    publicGateway: str
    parameterUpdater: str
    membershipServer: Optional[str] = None

    @model_validator(mode="wrap")
    @classmethod
    def _empty_means_no_infrastructure(cls, data: Any, handler: Any) -> Any:
        if isinstance(data, dict) and not data:
            return cls.model_construct(_fields_set=set())
        return handler(data)

    @model_serializer(mode="wrap")
    def _without_unset_optionals(self, handler: Any) -> Dict[str, Any]:
        return _without_none(handler(self), ("membershipServer",))


class StabilityChecker(_Strict):
    """Which stability policy the controller runs, as upstream AIOS stores it."""

    policyRuleURI: str = ""
    parameters: Dict[str, Any] = Field(default_factory=dict)
    interval: float = Field(60, gt=0, description="seconds between checks")
    paused: bool = False


Enforcement = Literal["enforce", "warn", "dryrun"]


class ClusterConfig(_Strict):
    policyExecutorId: str = ""
    policyExecutionMode: Literal["local", "remote"] = "local"
    customPolicySystem: Any = None
    publicHostname: str
    useGateway: bool = True
    actionsPolicyMap: Dict[str, Any] = Field(default_factory=dict)
    urlMap: UrlMap
    # Governance additions (DESIGN.md section 5): enforcement per action, stability checker.
    actionsEnforcement: Dict[str, Enforcement] = Field(default_factory=dict)
    stabilityChecker: Optional[StabilityChecker] = None


class ClusterMetadata(_Strict):
    name: str
    description: str
    owner: str
    email: Optional[str] = None
    countries: List[str] = Field(default_factory=list)
    miscContactInfo: Any = None
    additionalInfo: Any = None


class ClusterDocument(_Strict):
    """One onboarded cluster."""

    id: str = Field(pattern=ID_PATTERN)
    regionId: Optional[str] = None
    status: str = Field(min_length=1)
    nodes: Nodes
    gpus: Gpus
    vcpus: Count
    memory: Amount
    swap: Amount
    storage: Storage
    network: Network
    config: ClusterConfig
    tags: List[str]
    clusterMetadata: ClusterMetadata
    reputation: Optional[Union[int, float]] = None


def aggregate(nodes: List[NodeData]) -> Dict[str, Any]:
    """The cluster-level totals of a cluster document computed from its nodes."""
    return {
        "nodes": {"count": len(nodes), "nodeData": [n.model_dump() for n in nodes]},
        "gpus": {"count": sum(n.gpus.count for n in nodes),
                 "memory": sum(n.gpus.memory for n in nodes)},
        "vcpus": {"count": sum(n.vcpus.count for n in nodes)},
        "memory": sum(n.memory for n in nodes),
        "swap": sum(n.swap for n in nodes),
        "storage": {"disks": sum(n.storage.disks for n in nodes),
                    "size": sum(n.storage.size for n in nodes)},
        "network": {"interfaces": sum(n.network.interfaces for n in nodes),
                    "txBandwidth": sum(n.network.txBandwidth for n in nodes),
                    "rxBandwidth": sum(n.network.rxBandwidth for n in nodes)},
    }
