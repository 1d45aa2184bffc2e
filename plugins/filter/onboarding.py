# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The cluster_summary filter: a cluster document as a table a person reads."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: cluster_summary
short_description: A cluster document as a per-node table
version_added: 0.1.0
description:
  - Turns a cluster document (as returned by M(aios.platform.cluster_onboard)) into the lines
    of a fixed-width table, one row per node (vCPUs, memory, swap, storage, GPUs) and a row of
    totals, for the output of a playbook.
options:
  _input:
    description: The cluster document.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Show the nodes of the onboarded cluster
  ansible.builtin.debug:
    msg: "{{ onboarded.cluster | aios.platform.cluster_summary }}"
"""

RETURN = r"""
_value:
  description: The lines of the table.
  type: list
  elements: str
"""

from ansible_collections.aios.platform.plugins.module_utils.onboarding import summary_table


class FilterModule:
    """The collection's onboarding filter."""

    def filters(self):
        return {"cluster_summary": summary_table}
