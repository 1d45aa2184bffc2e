# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The preflight filter: every shortfall of a cluster for the management install."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: preflight_problems
short_description: Every reason a cluster cannot take the AIOS management install
version_added: 0.1.0
description:
  - Checks node counts, worker RAM and disk, a CNI, NodePort conflicts, node labels and
    listening ports, and returns every problem found as a sentence naming the fix.
options:
  _input:
    description: The cluster's Node objects (as returned by kubernetes.core.k8s_info).
    type: list
    elements: dict
    required: true
  workloads:
    description: DaemonSets (or Pods) in which to look for a CNI; omit to skip the CNI check.
    type: list
    elements: dict
  services:
    description: Every Service of the cluster, for the NodePort check.
    type: list
    elements: dict
    default: []
  claimed:
    description: The NodePorts this install claims, as namespace, name and node_port.
    type: list
    elements: dict
    default: []
  labels:
    description: Labels that enough nodes must carry, as key, value, count and for.
    type: list
    elements: dict
    default: []
  requirements:
    description: control_planes, min_workers, min_memory_gb and min_disk_gb.
    type: dict
    default: {}
  planned_labels:
    description: Labels the node_labels role will set, by node name, counted as present.
    type: dict
    default: {}
  listening:
    description: Ports each inventory host listens on (host name to list of ports).
    type: dict
    default: {}
  expected_ports:
    description: Ports each inventory host must listen on (host name to list of port and component).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Collect the problems
  ansible.builtin.set_fact:
    problems: "{{ nodes | aios.platform.preflight_problems(workloads=daemonsets, services=services) }}"
"""

RETURN = r"""
_value:
  description: The problems found, empty when the cluster is fine.
  type: list
  elements: str
"""

from ansible_collections.aios.platform.plugins.module_utils import preflight


def preflight_problems(nodes, workloads=None, services=None, claimed=None, labels=None,
                       requirements=None, listening=None, expected_ports=None,
                       planned_labels=None):
    """All problems, in a stable order: nodes, CNI, NodePorts, labels, host ports."""
    problems = list(preflight.node_problems(nodes or [], **(requirements or {})))
    if workloads is not None:
        problems += preflight.cni_problems(workloads)
    problems += preflight.node_port_problems(services or [], claimed or [])
    problems += preflight.label_problems(nodes or [], labels or [], planned_labels)
    problems += preflight.port_problems(listening or {}, expected_ports or {})
    return problems


class FilterModule:
    """The collection's preflight filter."""

    def filters(self):
        return {
            "preflight_problems": preflight_problems,
            "listening_ports": preflight.listening_ports,
        }
