# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Building a cluster document of the clusters registry from a cluster config and Kubernetes nodes.

Pure functions, shared by the cluster_onboard module and its tests. Memory, swap and
storage are in MiB, as upstream AIOS counts them. Values Kubernetes does not report
(number of disks, network bandwidth) get documented defaults, and the result says which.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.aios.platform.plugins.module_utils.quantity import parse_quantity, to_mib

GPU_ANNOTATION = "gpu.aios/info"
# The fields of a cluster document that come from its nodes; re-onboarding refreshes these.
NODE_FIELDS = ("nodes", "gpus", "vcpus", "memory", "swap", "storage", "network")
# Settings inside a cluster's config that governance tools own, not its config.json.
GOVERNED_CONFIG = ("actionsPolicyMap", "actionsEnforcement", "stabilityChecker")
# What Kubernetes does not report about a node, and what onboarding assumes instead.
DEFAULTS = {"storage.disks": 1, "network.txBandwidth": 0, "network.rxBandwidth": 0}


def empty_gpus():
    return {"count": 0, "memory": 0, "gpus": [], "features": [], "modelNames": []}


def gpus_from_annotation(raw, node_name, warnings):
    """The node's gpus block from gpu.aios/info: upstream's JSON list of
    ``{"modelName", "memory"}``, or a whole gpus block. Malformed: a warning, no GPUs."""
    if not raw:
        return empty_gpus()
    try:
        value = json.loads(raw)
    except ValueError:
        warnings.append("node %s: annotation %s is not JSON; counted without GPUs"
                        % (node_name, GPU_ANNOTATION))
        return empty_gpus()
    if isinstance(value, dict) and "gpus" in value:
        value = value.get("gpus") or []
    if not isinstance(value, list) or not all(
        isinstance(g, dict) and g.get("modelName") and isinstance(g.get("memory"), (int, float))
        for g in value
    ):
        warnings.append('node %s: annotation %s must be a list of {"modelName", "memory"}; '
                        "counted without GPUs" % (node_name, GPU_ANNOTATION))
        return empty_gpus()
    gpus = [{"modelName": g["modelName"], "memory": g["memory"]} for g in value]
    features = []
    for gpu in value:
        for feature in gpu.get("features") or []:
            if feature not in features:
                features.append(feature)
    return {
        "count": len(gpus),
        "memory": sum(g["memory"] for g in gpus),
        "gpus": gpus,
        "features": features,
        "modelNames": sorted(set(g["modelName"] for g in gpus)),
    }


def node_entry(node, warnings, gpu_annotation=None):
    """One nodeData entry from a Node object (``kubectl get nodes -o json`` item);
    ``gpu_annotation``, when given, stands in for the node's own gpu.aios/info."""
    metadata = node.get("metadata") or {}
    status = node.get("status") or {}
    capacity = status.get("capacity") or {}
    name = metadata.get("name", "?")
    annotations = metadata.get("annotations") or {}
    swap = ((status.get("nodeInfo") or {}).get("swap") or {}).get("capacity")
    addresses = [a for a in status.get("addresses") or []
                 if a.get("type") in ("InternalIP", "ExternalIP")]
    vcpus = parse_quantity(capacity.get("cpu"))
    if vcpus is None:
        warnings.append("node %s reports no CPU capacity; counted as 0 vCPUs" % name)
    return {
        "id": name,
        "gpus": gpus_from_annotation(gpu_annotation or annotations.get(GPU_ANNOTATION), name,
                                     warnings),
        "vcpus": {"count": int(vcpus or 0)},
        "memory": to_mib(capacity.get("memory")) or 0,
        "swap": to_mib(swap) or 0,
        "storage": {"disks": DEFAULTS["storage.disks"],
                    "size": to_mib(capacity.get("ephemeral-storage")) or 0},
        "network": {"interfaces": max(1, len(addresses)),
                    "txBandwidth": DEFAULTS["network.txBandwidth"],
                    "rxBandwidth": DEFAULTS["network.rxBandwidth"]},
    }


def aggregate(nodes):
    """The cluster totals of a cluster document from its node entries."""
    def total(path):
        value = 0
        for node in nodes:
            item = node
            for key in path:
                item = item[key]
            value += item
        return value

    return {
        "nodes": {"count": len(nodes), "nodeData": nodes},
        "gpus": {"count": total(("gpus", "count")), "memory": total(("gpus", "memory"))},
        "vcpus": {"count": total(("vcpus", "count"))},
        "memory": total(("memory",)),
        "swap": total(("swap",)),
        "storage": {"disks": total(("storage", "disks")), "size": total(("storage", "size"))},
        "network": {"interfaces": total(("network", "interfaces")),
                    "txBandwidth": total(("network", "txBandwidth")),
                    "rxBandwidth": total(("network", "rxBandwidth"))},
    }


# Upstream AIOS's convention for a cluster's service URLs, from its publicHostname: through
# the cluster's public gateway (NodePort 32000) under a path per service, or, without the
# gateway (useGateway false), on a NodePort per service. Upstream's gateway writes the same
# map when it creates the cluster's infrastructure.
GATEWAY_PORT = 32000
GATEWAY_PATHS = (("controllerService", "/controller"), ("metricsService", "/metrics"),
                 ("blocksQuery", "/blocks"), ("publicGateway", ""), ("parameterUpdater", "/mgmt"))
NODE_PORTS = (("controllerService", 32300), ("metricsService", 32301), ("blocksQuery", 32302),
              ("publicGateway", 32000), ("parameterUpdater", 32303), ("membershipServer", 30501))


def url_map_for(public_hostname, use_gateway=True):
    """The cluster's urlMap by upstream's convention for ``public_hostname``."""
    host = str(public_hostname).strip().rstrip("/")
    if "://" in host:
        host = host.split("://", 1)[1]
    if use_gateway:
        return dict((name, "http://%s:%d%s" % (host, GATEWAY_PORT, path))
                    for name, path in GATEWAY_PATHS)
    return dict((name, "http://%s:%d" % (host, port)) for name, port in NODE_PORTS)


def normalise_config(config):
    """(config, assumed): the cluster config as the registry's model reads it, and what was
    assumed to get there. Upstream's sample config (k8s/onboarding/cluster/config.json)
    names the node list ``nodes.nodesData`` and leaves ``config.urlMap`` out: the list is
    read as ``nodes.nodeData``, and the map is derived from ``config.publicHostname`` and
    ``config.useGateway`` by upstream's convention (reported in ``assumed``)."""
    config = dict(config)
    assumed = {}
    nodes = config.get("nodes")
    if isinstance(nodes, dict) and "nodesData" in nodes:
        nodes = dict(nodes)
        listed = nodes.pop("nodesData")
        nodes.setdefault("nodeData", listed)
        config["nodes"] = nodes
    settings = config.get("config")
    if isinstance(settings, dict) and "urlMap" not in settings and settings.get("publicHostname"):
        use_gateway = settings.get("useGateway", True)
        derived = url_map_for(settings["publicHostname"], use_gateway is not False)
        config["config"] = dict(settings, urlMap=derived)
        assumed["config.urlMap"] = derived
    return config, assumed


def build_document(config, node_objects, gpu_annotations=None):
    """(document, warnings): the cluster config with the nodes' entries and totals.
    ``gpu_annotations`` maps node names to gpu.aios/info values gathered but not (yet)
    written to the nodes; a name that matches no node is a warning."""
    warnings = []
    gpu_annotations = gpu_annotations or {}
    entries = [node_entry(node, warnings,
                          gpu_annotations.get((node.get("metadata") or {}).get("name")))
               for node in node_objects]
    known = set(entry["id"] for entry in entries)
    for name in sorted(set(gpu_annotations) - known):
        warnings.append("GPU facts were given for %s, which is not a node of the cluster" % name)
    document = dict(config)
    document.setdefault("status", "live")
    document.setdefault("tags", [])
    document.update(aggregate(entries))
    return document, warnings


def parser_envelope(document):
    """The upstream parser's Parser/V1 request for a cluster document."""
    return {"header": {"templateUri": "Parser/V1", "parameters": {}},
            "body": {"spec": {"values": document}}}


def _gpu_text(gpus):
    if not gpus["count"]:
        return "-"
    counts = {}
    for gpu in gpus["gpus"]:
        counts[gpu["modelName"]] = counts.get(gpu["modelName"], 0) + 1
    return ", ".join("%dx %s" % (count, model) for model, count in sorted(counts.items()))


def summary_table(document):
    """Lines of a fixed-width table of a cluster document: a row per node and the totals."""
    header = ("node", "vCPUs", "memory MiB", "swap MiB", "storage MiB", "GPUs")
    rows = [(n["id"], str(n["vcpus"]["count"]), str(n["memory"]), str(n["swap"]),
             str(n["storage"]["size"]), _gpu_text(n["gpus"]))
            for n in document["nodes"]["nodeData"]]
    gpu_total = "%d (%d MiB)" % (document["gpus"]["count"], document["gpus"]["memory"])
    rows.append(("total (%d nodes)" % document["nodes"]["count"], str(document["vcpus"]["count"]),
                 str(document["memory"]), str(document["swap"]), str(document["storage"]["size"]),
                 gpu_total))
    columns = range(len(header))
    widths = [max([len(header[i])] + [len(row[i]) for row in rows]) for i in columns]

    def line(row):
        return "  ".join(row[i].ljust(widths[i]) for i in columns).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return [line(header), rule] + [line(row) for row in rows[:-1]] + [rule, line(rows[-1])]
