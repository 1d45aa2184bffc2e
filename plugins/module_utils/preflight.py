# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The management cluster's preflight rules, as pure functions over Kubernetes objects.

Every rule returns the problems it finds as sentences that name the node, port or label
and the fix, so that the preflight role can report all shortfalls in one message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.aios.platform.plugins.module_utils.quantity import (
    parse_quantity as quantity_bytes,
)

CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
CNI_NAMES = ("weave", "flannel", "calico", "cilium")


def _name(obj):
    return (obj.get("metadata") or {}).get("name", "?")


def _labels(obj):
    return (obj.get("metadata") or {}).get("labels") or {}


def is_control_plane(node):
    labels = _labels(node)
    return any(label in labels for label in CONTROL_PLANE_LABELS)


def node_problems(nodes, control_planes=1, min_workers=3, min_memory_gb=8, min_disk_gb=40):
    """Node counts and the capacity of each worker (GB = 10^9 bytes, the unit the hardware requirements are stated in)."""
    problems = []
    masters = [n for n in nodes if is_control_plane(n)]
    workers = [n for n in nodes if not is_control_plane(n)]
    if len(masters) < control_planes:
        problems.append(
            "found %d control-plane node(s), need at least %d (nodes labelled %s)"
            % (len(masters), control_planes, CONTROL_PLANE_LABELS[0])
        )
    if len(workers) < min_workers:
        problems.append(
            "found %d worker node(s) (%s), need at least %d: join more workers with kubeadm join"
            % (len(workers), ", ".join(sorted(_name(n) for n in workers)) or "none", min_workers)
        )
    for node in sorted(workers, key=_name):
        capacity = (node.get("status") or {}).get("capacity") or {}
        for key, minimum, what in (("memory", min_memory_gb, "RAM"),
                                   ("ephemeral-storage", min_disk_gb, "disk")):
            found = quantity_bytes(capacity.get(key))
            if found is None:
                problems.append("worker %s reports no %s capacity" % (_name(node), what))
            elif found < minimum * 10 ** 9:
                problems.append(
                    "worker %s has %.1f GB %s, needs at least %s GB"
                    % (_name(node), found / 10 ** 9, what, minimum)
                )
    return problems


def cni_problems(workloads):
    """A CNI (weave, flannel, calico, cilium) must run: looked for among DaemonSets/Pods."""
    names = [_name(w).lower() for w in workloads]
    if any(cni in name for name in names for cni in CNI_NAMES):
        return []
    return ["no CNI found (looked for %s DaemonSets); install one before AIOS"
            % ", ".join(CNI_NAMES)]


def node_port_problems(services, claimed):
    """NodePorts this install claims that another Service already holds.

    ``claimed`` lists ``{"namespace", "name", "node_port"}``; a Service with the same
    namespace and name is this install's own (a re-run), not a conflict.
    """
    held = {}
    for service in services:
        meta = service.get("metadata") or {}
        for port in (service.get("spec") or {}).get("ports") or []:
            if port.get("nodePort"):
                held[int(port["nodePort"])] = (meta.get("namespace"), meta.get("name"))
    problems = []
    for claim in sorted(claimed, key=lambda c: int(c["node_port"])):
        owner = held.get(int(claim["node_port"]))
        if owner and owner != (claim["namespace"], claim["name"]):
            problems.append(
                "NodePort %s (for %s/%s) is already used by service %s/%s"
                % (claim["node_port"], claim["namespace"], claim["name"], owner[0], owner[1])
            )
    return problems


def label_problems(nodes, required, planned=None):
    """Enough nodes carry (or will carry) each label the databases are pinned to.

    ``required`` lists ``{"key", "value", "count", "for"}``; ``planned`` maps node names
    to the labels the node_labels role is about to set from the inventory.
    """
    planned = planned or {}
    problems = []
    for need in required:
        matching = [n for n in nodes
                    if dict(_labels(n), **planned.get(_name(n), {})).get(need["key"]) == need["value"]]
        if len(matching) < int(need["count"]):
            problems.append(
                "%d node(s) labelled %s=%s, %s needs %s (one per replica): "
                "kubectl label node <node> %s=%s, or set them in the inventory for node_labels"
                % (len(matching), need["key"], need["value"], need["for"], need["count"],
                   need["key"], need["value"])
            )
    return problems


def port_problems(listening, expected):
    """Ports each host should listen on: ``listening`` host -> ports, ``expected`` host ->
    list of ``{"port", "component"}``."""
    problems = []
    for host in sorted(expected):
        ports = set(int(p) for p in listening.get(host, []))
        for need in expected[host]:
            if int(need["port"]) not in ports:
                problems.append(
                    "%s does not listen on %s/tcp (%s)" % (host, need["port"], need["component"])
                )
    return problems


_SS_LINE = re.compile(r"^\S+\s+\d+\s+\d+\s+\S*:(\d+)\s")


def listening_ports(ss_output):
    """The TCP ports in the output of ``ss -Htln`` (sorted, unique)."""
    ports = set()
    for line in str(ss_output or "").splitlines():
        match = _SS_LINE.match(line.strip())
        if match:
            ports.add(int(match.group(1)))
    return sorted(ports)
