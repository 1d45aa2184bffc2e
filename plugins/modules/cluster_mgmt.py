#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster_mgmt
short_description: Send a management command to a cluster controller's service
version_added: 0.1.0
description:
  - Sends C(POST /mgmt) to a cluster controller, e.g. to the stability checker
    (C(set_policy), C(set_interval), C(pause), C(resume), C(run_now)), and returns its answer.
    Commands that only read (C(run_now) and C(get_*)) report no change; the built-in settings
    commands report whether the controller's answer says they changed something.
options:
  cluster_id:
    description: The cluster; default the controller's own (C(AIOS_CLUSTER_ID)).
    type: str
  service:
    description: The controller's service.
    type: str
    default: stability_checker
  action:
    description: The command (C(mgmt_action)).
    type: str
    required: true
  data:
    description: The command's data (C(mgmt_data)).
    type: dict
    default: {}
extends_documentation_fragment:
  - aios.platform.api
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Sends nothing; reports that a command other than C(run_now) and C(get_*) would change something.
    support: full
  diff_mode:
    description: No diff is shown.
    support: none
"""

EXAMPLES = r"""
- name: Set the stability policy and check now
  aios.platform.cluster_mgmt:
    cluster_id: cluster-west-vision-001
    action: "{{ item.action }}"
    data: "{{ item.data }}"
    api_url: http://127.0.0.1:8080
    api_token: "{{ aios_api_token }}"
  loop:
    - {action: set_policy, data: {policy_rule_uri: "aiosv1.policies.stability-checker.node-health:v0.1.0-stable"}}
    - {action: run_now, data: {}}
"""

RETURN = r"""
response:
  description: The controller's answer.
  type: dict
  returned: success
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aios.platform.plugins.module_utils.api_client import (
    API_ARGUMENT_SPEC,
    AiosApi,
    ApiError,
)

READ_ONLY = ("run_now",)


def main():
    spec = dict(
        cluster_id=dict(type="str"),
        service=dict(type="str", default="stability_checker"),
        action=dict(type="str", required=True),
        data=dict(type="dict", default={}),
    )
    spec.update(API_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    action = module.params["action"]
    changes = action not in READ_ONLY and not action.startswith("get")
    if module.check_mode:
        module.exit_json(changed=changes)
    params = {"cluster_id": module.params["cluster_id"]} if module.params["cluster_id"] else None
    body = {"block_id": "", "service": module.params["service"], "mgmt_action": action,
            "mgmt_data": module.params["data"]}
    try:
        response = AiosApi(module).request("POST", "/mgmt", params=params, body=body)[1]
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status, response=exc.body)
    if isinstance(response, dict) and isinstance(response.get("changed"), bool):
        changes = response["changed"]
    module.exit_json(changed=changes, response=response)


if __name__ == "__main__":
    main()
