#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: node_membership
short_description: Add a node to an AIOS cluster or remove it, as the cluster's policies decide
version_added: 0.1.0
description:
  - Builds a node's C(nodeData) document of the cluster document from the host's Ansible facts
    and its GPU facts (M(aios.platform.gpu_facts)), and adds it to or removes it from the
    cluster in the clusters registry through the policy runtime's governed actions
    C(add_node) and C(remove_node).
  - The action's pre-check policy is asked first (C(POST /pre-check/<action>), a dry check
    that applies nothing). A denial fails with the policy's reason, the policy and the
    decision id; the cluster's enforcement mode for the action applies as the runtime defines
    it (C(warn) and C(dryrun) let a denied action through and the result says so). A policy
    that errors or times out denies (the runtime fails closed), and so does a runtime that
    cannot be reached.
  - Then, unless O(decide_only) or check mode, the governed action itself runs
    (C(POST /cluster-actions/add-node), C(DELETE /cluster-actions/remove-node/<id>)); the
    policy decides again there and the registry recomputes the cluster's totals.
  - A node the registry already holds is not added again (O(state=present) is then a no-op
    without a decision); removing a node the registry does not hold still asks the policy,
    so that a denied removal is reported, and changes nothing.
options:
  cluster_id:
    description: The cluster the node joins or leaves.
    type: str
    required: true
  state:
    description: V(present) adds the node, V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  node_id:
    description:
      - The node's id in the cluster document, the same as its Kubernetes node name.
    type: str
    required: true
  facts:
    description:
      - The host's Ansible facts (C(ansible_facts) with the C(hardware) and C(network)
        subsets), for O(state=present) without O(node).
      - vCPUs are C(processor_vcpus), memory and swap C(memtotal_mb) and C(swaptotal_mb),
        disks the whole block devices of C(devices) (not loop, ram, zram, device-mapper,
        optical or removable ones) with their total size.
      - Interfaces are the physical and bonded ones of C(interfaces), that is those backed
        by a device (their facts have C(pciid)) and bonds (C(type=bonding)), but not a
        bond's members (counted in their bond), loopbacks or bridges. Container, overlay and
        tunnel interfaces (C(docker0), C(veth*), C(cni0), C(flannel.1), C(cali*),
        C(vxlan*), C(tunl0), C(kube-ipvs0), C(virbr*), C(br-*) and the like) are not
        counted, also by name when the facts have no details of the interface.
      - The bandwidths are the sum of the counted interfaces' link speeds in MB/s (an
        unknown speed counts 0).
    type: dict
  gpus:
    description:
      - The C(gpus) block that M(aios.platform.gpu_facts) returns; no GPUs when omitted.
    type: dict
  node:
    description:
      - The complete C(nodeData) document, instead of O(facts) and O(gpus).
    type: dict
  decide_only:
    description:
      - Only ask the pre-check policy and report its decision; add or remove nothing.
    type: bool
    default: false
extends_documentation_fragment:
  - aios.platform.api
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Asks the pre-check policy (a decision is a read) and reports whether the
      node would be added or removed; changes nothing.
    support: full
  diff_mode:
    description: Not supported.
    support: none
"""

EXAMPLES = r"""
- name: Gather the GPU facts of the node
  aios.platform.gpu_facts:
  register: node_gpus

- name: Add the node to the cluster, as its add_node policy decides
  aios.platform.node_membership:
    cluster_id: cluster-west-vision-001
    node_id: "{{ inventory_hostname }}"
    facts: "{{ ansible_facts }}"
    gpus: "{{ node_gpus.gpus }}"
    api_url: http://127.0.0.1:8080
    api_token: "{{ aios_api_token }}"
  delegate_to: localhost

- name: Ask the remove_node policy only
  aios.platform.node_membership:
    cluster_id: cluster-west-vision-001
    node_id: aios-worker-3
    state: absent
    decide_only: true
    api_url: http://127.0.0.1:8080
    api_token: "{{ aios_api_token }}"
"""

RETURN = r"""
node:
  description: The node's nodeData document (with O(state=present)).
  type: dict
  returned: always
allowed:
  description: Whether the action may go ahead (after the enforcement mode applied).
  type: bool
  returned: always
reason:
  description: Why; the policy's reason, or why no decision was needed.
  type: str
  returned: always
decision:
  description:
    - The pre-check decision (allowed, policy_allowed, enforcement, reason, policy_rule_uri,
      decision_id); null when none was asked for.
  type: dict
  returned: always
member:
  description: Whether the registry holds the node afterwards (in check mode, would hold it).
  type: bool
  returned: always
registered:
  description: The node document the registry holds, when it held the node already.
  type: dict
  returned: when O(state=present) and the cluster already holds the node
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aios.platform.plugins.module_utils.api_client import (
    API_ARGUMENT_SPEC,
    AiosApi,
    ApiError,
    path_segment,
)

NO_GPUS = {"count": 0, "memory": 0, "gpus": [], "features": [], "modelNames": []}
# Block devices that are not disks of the node.
VIRTUAL_DEVICES = ("loop", "ram", "zram", "dm-", "sr", "fd", "nbd", "md")
# Names of interfaces that are no network card of the node: loopback, container, overlay,
# tunnel and bridge devices (Docker, CNI plugins, kube-proxy's IPVS, libvirt, WireGuard).
# The facts' details decide first; the names also cover facts without them.
VIRTUAL_INTERFACES = re.compile(
    r"^(lo$|docker|veth|cni|flannel|cali|vxlan|tun|tap|kube-|virbr|br-|vnet|ifb|dummy"
    r"|cilium|lxc|weave|wg|genev|gre|sit|ip6tnl|nodelocaldns|antrea|ovs-)"
)
DECISION_FIELDS = (
    "allowed",
    "policy_allowed",
    "enforcement",
    "reason",
    "policy_rule_uri",
    "decision_id",
    "action",
    "dry_check",
)


def _number(value, default=0):
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def storage_of(facts):
    disks, size = 0, 0
    for name, device in sorted((facts.get("devices") or {}).items()):
        if name.startswith(VIRTUAL_DEVICES) or not isinstance(device, dict):
            continue
        if str(device.get("removable", "0")) == "1":
            continue
        disks += 1
        size += _number(device.get("sectors")) * _number(device.get("sectorsize"), 512)
    return {"disks": disks, "size": size // (1024 * 1024)}


def interface_facts(facts, name):
    """An interface's facts: ansible_facts names them with "-" as "_" ("br-x" is "br_x",
    "flannel.1" stays); "." as "_" too is accepted. None when the facts have none."""
    for key in (name.replace("-", "_"), name, name.replace("-", "_").replace(".", "_")):
        details = facts.get(key)
        if isinstance(details, dict):
            return details
    return None


def physical_interfaces(facts):
    """The node's physical and bonded interfaces: [(name, facts)], by name."""
    names = [n for n in (facts.get("interfaces") or []) if isinstance(n, str)]
    details = dict((n, interface_facts(facts, n)) for n in names)
    members = set()
    for item in details.values():
        if item and item.get("type") == "bonding":
            members.update(item.get("slaves") or [])
    kept = []
    for name in sorted(names):
        item = details[name]
        if VIRTUAL_INTERFACES.match(name) or name in members:
            continue
        if item is None:  # no details: the name decides
            kept.append((name, {}))
        elif item.get("type") in ("loopback", "bridge") or "perm_macaddress" in item:
            continue  # perm_macaddress: a bond's member
        elif item.get("type") == "bonding" or item.get("pciid"):
            kept.append((name, item))
    return kept


def network_of(facts):
    interfaces = physical_interfaces(facts)
    speed = sum(max(_number(item.get("speed")), 0) for _name, item in interfaces)
    bandwidth = speed // 8  # Mb/s to MB/s
    return {"interfaces": len(interfaces), "txBandwidth": bandwidth, "rxBandwidth": bandwidth}


def node_document(node_id, facts, gpus):
    """The nodeData document of the cluster document, from Ansible facts and GPU facts."""
    facts = facts or {}
    return {
        "id": node_id,
        "gpus": dict(NO_GPUS, **(gpus or {})),
        "vcpus": {"count": _number(facts.get("processor_vcpus"))},
        "memory": _number(facts.get("memtotal_mb")),
        "swap": _number(facts.get("swaptotal_mb")),
        "storage": storage_of(facts),
        "network": network_of(facts),
    }


def decision_of(data):
    return dict((k, data.get(k)) for k in DECISION_FIELDS if isinstance(data, dict))


def refusal(module, action, node_id, decision, **extra):
    module.fail_json(
        msg="%s of node %s denied by policy %s: %s (decision %s)"
        % (
            action,
            node_id,
            decision.get("policy_rule_uri") or "-",
            decision.get("reason") or "denied",
            decision.get("decision_id") or "-",
        ),
        allowed=False,
        reason=decision.get("reason") or "denied",
        decision=decision,
        **extra,
    )


def main():
    spec = dict(
        cluster_id=dict(type="str", required=True),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        node_id=dict(type="str", required=True),
        facts=dict(type="dict"),
        gpus=dict(type="dict"),
        node=dict(type="dict"),
        decide_only=dict(type="bool", default=False),
    )
    spec.update(API_ARGUMENT_SPEC)
    module = AnsibleModule(
        argument_spec=spec,
        supports_check_mode=True,
        mutually_exclusive=[("node", "facts"), ("node", "gpus")],
    )
    p = module.params
    cid, node_id = p["cluster_id"], p["node_id"]
    api = AiosApi(module)
    query = {"cluster_id": cid}
    node = None
    if p["state"] == "present":
        node = p["node"] or node_document(node_id, p["facts"], p["gpus"])
        if node.get("id") != node_id:
            module.fail_json(msg="node.id %r is not node_id %r" % (node.get("id"), node_id))
    action = "add_node" if p["state"] == "present" else "remove_node"
    apply = not (p["decide_only"] or module.check_mode)
    try:
        cluster = api.request("GET", "/clusters/read/%s" % path_segment(cid))[1]
        if isinstance(cluster, dict) and isinstance(cluster.get("data"), dict):
            cluster = cluster["data"]  # upstream's gateway envelope {"success", "data"}
        held = [n for n in cluster["nodes"]["nodeData"] if n.get("id") == node_id]
        if p["state"] == "present" and held:
            module.exit_json(
                changed=False,
                node=node,
                allowed=True,
                member=True,
                decision=None,
                reason="the cluster already holds the node",
                registered=held[0],
            )
        if p["state"] == "present":
            payload = {"cluster_id": cid, "node": node, "cluster": cluster}
        else:
            payload = {"cluster_id": cid, "node_id": node_id, "cluster": cluster}
        decision = decision_of(
            api.request("POST", "/pre-check/%s" % action, params=query, body=payload)[1]
        )
        if not decision.get("allowed"):
            refusal(module, action, node_id, decision, node=node, member=bool(held))
        reason = decision.get("reason") or "allowed"
        if not decision.get("policy_allowed", True):
            module.warn(
                "%s of node %s: the policy denied it (%s), but the enforcement mode is %s"
                % (action, node_id, reason, decision.get("enforcement"))
            )
        if p["state"] == "absent" and not held:
            module.exit_json(
                changed=False,
                node=node,
                allowed=True,
                member=False,
                decision=decision,
                reason=reason,
            )
        if not apply:
            module.exit_json(
                changed=not p["decide_only"],
                node=node,
                allowed=True,
                member=bool(held) if p["decide_only"] else p["state"] == "present",
                decision=decision,
                reason=reason,
            )
        if p["state"] == "present":
            status, data = api.request(
                "POST", "/cluster-actions/add-node", params=query, body=node, ok=(200, 403, 409)
            )
        else:
            status, data = api.request(
                "DELETE",
                "/cluster-actions/remove-node/%s" % path_segment(node_id),
                params=query,
                ok=(200, 403, 404),
            )
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status, response=exc.body, allowed=False)
    if status == 403:
        refusal(module, action, node_id, decision_of(data), node=node, member=bool(held))
    # 409: added meanwhile; 404: removed meanwhile. Either way there is nothing to change.
    module.exit_json(
        changed=status == 200,
        node=node,
        allowed=True,
        member=p["state"] == "present",
        decision=decision,
        reason=reason,
    )


if __name__ == "__main__":
    main()
