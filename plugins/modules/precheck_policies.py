#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: precheck_policies
short_description: Set a cluster's pre-check policy map
version_added: 0.1.0
description:
  - Sets which policy governs each action of a cluster, with upstream AIOS's semantics.
    A given URI sets an action's policy, an empty string removes it, actions not given stay
    as they are. Returns the map and, in diff mode, what changed.
options:
  cluster_id:
    description: The cluster; default the controller's own (C(AIOS_CLUSTER_ID)).
    type: str
  policies:
    description: Action name to policy URI; an empty string removes the action's policy.
    type: dict
    required: true
extends_documentation_fragment:
  - aios.platform.api
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Computes the new map; changes nothing.
    support: full
  diff_mode:
    description: Shows the map before and after.
    support: full
"""

EXAMPLES = r"""
- name: Govern add_node, stop governing remove_block
  aios.platform.precheck_policies:
    cluster_id: cluster-west-vision-001
    policies:
      add_node: aiosv1.policies.cluster-controller-gateway.add-node-gpu-minimum:v0.1.0-stable
      remove_block: ""
    api_url: http://127.0.0.1:8080
    api_token: "{{ aios_api_token }}"
"""

RETURN = r"""
policy_map:
  description: The cluster's action to policy map after the change.
  type: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aios.platform.plugins.module_utils.api_client import (
    API_ARGUMENT_SPEC,
    AiosApi,
    ApiError,
)


def main():
    spec = dict(cluster_id=dict(type="str"), policies=dict(type="dict", required=True))
    spec.update(API_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    api = AiosApi(module)
    params = {"cluster_id": module.params["cluster_id"]} if module.params["cluster_id"] else None
    try:
        before = api.request("GET", "/pre-check-policies", params=params)[1]["actionsPolicyMap"]
        wanted = dict(before)
        for action, uri in module.params["policies"].items():
            if uri:
                wanted[action] = uri
            else:
                wanted.pop(action, None)
        changed = wanted != before
        after = wanted
        if changed and not module.check_mode:
            after = api.request("POST", "/pre-check-policies/update", params=params,
                                body=module.params["policies"])[1]["actionsPolicyMap"]
            changed = after != before
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status, response=exc.body)
    module.exit_json(changed=changed, policy_map=after, diff={"before": before, "after": after})


if __name__ == "__main__":
    main()
