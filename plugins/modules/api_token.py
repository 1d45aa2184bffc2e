#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: api_token
short_description: Create or revoke a scoped API token of the policy runtime
version_added: 0.1.0
description:
  - Makes sure the policy runtime has a live token named O(name) with the given role and
    scope (O(state=present)), or none (O(state=absent)), through the runtime's admin routes
    C(POST /tokens), C(GET /tokens/{name}) and C(DELETE /tokens/{name}).
  - Idempotent by name. A token is shown only when it is created, so the module returns
    RV(token) only when it creates one; a live token whose role or scope differs is revoked
    and created again (a new secret) only with O(replace=true), else the module fails.
    O(rotate=true) revokes and re-creates a live token in any case.
  - Needs an admin token in O(api_token) (the runtime's bootstrap C(AIOS_API_TOKEN) is one).
  - "Roles: V(admin), V(operator), V(cluster-owner) (with O(clusters) and optionally
    O(policy_prefixes)), V(executor), V(reader); the policy runtime's README lists the
    permissions of each."
options:
  name:
    description: The token's unique name, recorded with every write it makes.
    type: str
    required: true
  role:
    description: The token's role; required when O(state=present).
    type: str
    choices: [admin, operator, cluster-owner, executor, reader]
  clusters:
    description: V(cluster-owner) only; the cluster ids the token may read and change.
    type: list
    elements: str
    default: []
  policy_prefixes:
    description: V(cluster-owner) only; policy name prefixes it may publish under.
    type: list
    elements: str
    default: []
  expires:
    description: Expiry as ISO 8601 (for example C(2027-01-01T00:00:00Z)); none never expires.
    type: str
  replace:
    description: Revoke and re-create a live token whose role or scope differs.
    type: bool
    default: false
  rotate:
    description:
      - Revoke a live token and create it again (a new secret) even when its role and scope
        match, so that RV(token) is returned; for when the place its secret was kept is lost.
      - The installer sets it when a component's token Secret does not exist.
    type: bool
    default: false
  state:
    description: V(present) creates the token if there is no live one; V(absent) revokes it.
    type: str
    choices: [present, absent]
    default: present
extends_documentation_fragment:
  - aios.platform.api
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Reads the token and reports whether it would change; creates nothing.
    support: full
  diff_mode:
    description: Not supported; a token's secret is never part of a diff.
    support: none
"""

EXAMPLES = r"""
- name: An owner token for one cluster, saved where only its owner reads it
  aios.platform.api_token:
    api_url: http://127.0.0.1:8080
    api_token: "{{ aios_admin_token }}"
    name: owner-west
    role: cluster-owner
    clusters: [cluster-west-vision-001]
    policy_prefixes: [aiosv1.policies.west.]
  register: owner
  no_log: true

- name: A fresh secret for the executor token of a controller whose Secret was lost
  aios.platform.api_token:
    api_url: http://127.0.0.1:8080
    api_token: "{{ aios_admin_token }}"
    name: controller-cluster-west-vision-001
    role: executor
    rotate: true
  register: executor
  no_log: true

- name: Revoke it
  aios.platform.api_token:
    api_url: http://127.0.0.1:8080
    api_token: "{{ aios_admin_token }}"
    name: owner-west
    state: absent
"""

RETURN = r"""
token:
  description: The token's secret; only when this run created it (it is never shown again).
  type: str
  returned: when created
record:
  description: The token's record (name, role, clusters, policy_prefixes, created, expires,
    last_used, revoked); never its secret.
  type: dict
  returned: when the token exists
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aios.platform.plugins.module_utils.api_client import (
    API_ARGUMENT_SPEC,
    AiosApi,
    ApiError,
    path_segment,
)


def live_record(api, name):
    """The live (not revoked) token named ``name``, or None."""
    try:
        record = api.request("GET", "/tokens/%s" % path_segment(name))[1]
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    return None if record.get("revoked") else record


def differences(record, wanted):
    return sorted(key for key, value in wanted.items()
                  if key != "expires" and record.get(key) != value)


def main():
    spec = dict(
        name=dict(type="str", required=True),
        role=dict(type="str", choices=["admin", "operator", "cluster-owner", "executor",
                                       "reader"]),
        clusters=dict(type="list", elements="str", default=[]),
        policy_prefixes=dict(type="list", elements="str", default=[]),
        expires=dict(type="str"),
        replace=dict(type="bool", default=False),
        rotate=dict(type="bool", default=False),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    spec.update(API_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True,
                           required_if=[("state", "present", ["role"])])
    params = module.params
    api = AiosApi(module)
    name = params["name"]
    try:
        record = live_record(api, name)
        if params["state"] == "absent":
            if record is not None and not module.check_mode:
                record = api.request("DELETE", "/tokens/%s" % path_segment(name))[1]
            module.exit_json(changed=record is not None, record=record)
        wanted = {"name": name, "role": params["role"],
                  "clusters": sorted(set(params["clusters"])),
                  "policy_prefixes": sorted(set(params["policy_prefixes"]))}
        if params["expires"]:
            wanted["expires"] = params["expires"]
        if record is not None:
            differ = differences(record, wanted)
            if not differ and not params["rotate"]:
                module.exit_json(changed=False, record=record)
            if differ and not params["replace"]:
                module.fail_json(msg="token %s exists with another %s; set replace=true to "
                                     "revoke it and create a new one" % (name, ", ".join(differ)),
                                 record=record)
            if module.check_mode:
                module.exit_json(changed=True, record=record)
            api.request("DELETE", "/tokens/%s" % path_segment(name))
        if module.check_mode:
            module.exit_json(changed=True)
        created = api.request("POST", "/tokens", body=wanted, ok=(201,))[1]
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status, response=exc.body)
    secret = created.pop("token")
    module.exit_json(changed=True, token=secret, record=created)


if __name__ == "__main__":
    main()
