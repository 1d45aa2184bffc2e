#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster
short_description: Create, update or delete a cluster in the AIOS clusters registry
version_added: 0.1.0
description:
  - With O(state=present) and O(document), creates the cluster when it does not exist.
  - With O(state=present) and O(fields), sets those fields (dotted paths allowed) of an
    existing cluster with C($set), only when they differ. The registry validates the result.
  - With O(governed=true), the fields go through the cluster controller's governed update
    (C(PATCH /clusters/update/<id>)), which its C(update_cluster) pre-check policy allows or
    denies; a denial fails the task with the policy's reason and changes nothing.
  - With O(state=absent), deletes the cluster.
options:
  id:
    description: The cluster.
    type: str
    required: true
  document:
    description: The whole cluster document, to create it.
    type: dict
  fields:
    description: "Fields to set by dotted path, for example C(clusterMetadata.owner) or C(tags)."
    type: dict
  governed:
    description: Send O(fields) through the controller's pre-check policy instead of writing them directly.
    type: bool
    default: false
  state:
    description: Whether the cluster should exist.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - aios.platform.api
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Compares with the registry; changes nothing.
    support: full
  diff_mode:
    description: Shows the fields before and after.
    support: full
"""

EXAMPLES = r"""
- name: Change the owner, if the cluster's update_cluster policy allows it
  aios.platform.cluster:
    id: cluster-west-vision-001
    fields:
      clusterMetadata.owner: platform-team
    governed: true
    api_url: http://127.0.0.1:8080
    api_token: "{{ aios_api_token }}"

- name: Retag a cluster
  aios.platform.cluster:
    id: cluster-west-vision-001
    fields:
      tags: [gpu, production]
    api_url: http://127.0.0.1:8080
    api_token: "{{ aios_api_token }}"
"""

RETURN = r"""
decision:
  description: The pre-check decision that denied a governed update (C(allowed), C(reason), C(policy_rule_uri) ...).
  type: dict
  returned: when a governed update is denied
cluster:
  description: The cluster after the change (absent after a delete).
  type: dict
  returned: success
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aios.platform.plugins.module_utils.api_client import (
    API_ARGUMENT_SPEC,
    AiosApi,
    ApiError,
    path_segment,
)


def field_value(document, path):
    value = document
    for key in path.split("."):
        if isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            return None
    return value


def main():
    spec = dict(id=dict(type="str", required=True), document=dict(type="dict"),
                fields=dict(type="dict"), governed=dict(type="bool", default=False),
                state=dict(type="str", choices=["present", "absent"], default="present"))
    spec.update(API_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=spec, mutually_exclusive=[("document", "fields")],
                           required_if=[("state", "present", ("document", "fields"), True)],
                           supports_check_mode=True)
    api = AiosApi(module)
    path = "/clusters/%s" % path_segment(module.params["id"])
    try:
        status, current = api.request("GET", path, ok=(200, 404))
        if module.params["state"] == "absent":
            if status == 404:
                module.exit_json(changed=False)
            if not module.check_mode:
                api.request("DELETE", path)
            module.exit_json(changed=True)
        if module.params["document"] is not None:
            if status == 200:
                module.exit_json(changed=False, cluster=current)
            document = dict(module.params["document"], id=module.params["id"])
            if module.check_mode:
                module.exit_json(changed=True, cluster=document)
            module.exit_json(changed=True, cluster=api.request("POST", "/clusters", body=document)[1])
        if status == 404:
            module.fail_json(msg="cluster %s does not exist; create it with document" % module.params["id"])
        fields = module.params["fields"]
        before = dict((k, field_value(current, k)) for k in fields)
        differing = dict((k, v) for k, v in fields.items() if before[k] != v)
        diff = {"before": before, "after": dict(before, **differing)}
        if not differing:
            module.exit_json(changed=False, cluster=current, diff=diff)
        if module.check_mode:
            module.exit_json(changed=True, cluster=current, diff=diff)
        if module.params["governed"]:
            update_path = "/clusters/update/%s" % path_segment(module.params["id"])
            status, answer = api.request("PATCH", update_path, body=differing, ok=(200, 403))
            if status == 403:
                module.fail_json(msg="the update_cluster policy %s denied the update: %s"
                                 % (answer.get("policy_rule_uri"), answer.get("reason")),
                                 decision=answer, diff=diff)
            updated = answer
        else:
            updated = api.request("PUT", path, body={"$set": differing})[1]
        module.exit_json(changed=True, cluster=updated, diff=diff)
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status, response=exc.body)


if __name__ == "__main__":
    main()
