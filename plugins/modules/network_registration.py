#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: network_registration
short_description: Register a cluster's add-on with the registries of the AIOS network
version_added: 0.1.0
description:
  - Registers (or deregisters) one add-on of a cluster with the registry of the AIOS network
    that lists its kind, as upstream AIOS's onboarding guide does with C(curl), but
    idempotently.
  - V(container_registry), V(asset_registry) and V(inference_server) are upstream's
    registries of container registries, assets registries and adhoc inference servers. The
    document is upstream's, its fields prefixed with the kind
    (C(asset_registry_name), C(inference_server_public_url), ...), under the given O(id).
    A registration that exists with other values is updated (C(PUT /<kind>/<id>)).
  - V(executor) registers a policy executor with the network's policies system
    (C(POST /executors) C({"id", "url"})); the URL's host must be in that system's
    C(AIOS_EXECUTOR_ALLOWED_HOSTS). The answer holds the executor's own token, shown once
    and returned as RV(executor_token); an executor registered with another URL is
    registered afresh, which issues a new token.
options:
  kind:
    description: The registry to register with.
    type: str
    choices: [container_registry, asset_registry, inference_server, executor]
    required: true
  id:
    description: The registration's id (C(<kind>_id) of the document, or the executor id).
    type: str
    required: true
  name:
    description: Human-readable name (C(<kind>_name)); default O(id). Not used by V(executor).
    type: str
  public_url:
    description: URL at which the network reaches the add-on (C(<kind>_public_url), or the
      executor's URL); required when O(state=present).
    type: str
  metadata:
    description: C(<kind>_metadata). Not used by V(executor).
    type: dict
    default: {}
  tags:
    description: C(<kind>_tags). Not used by V(executor).
    type: list
    elements: str
    default: []
  extra:
    description: More fields of the document, such as C(image_prefix) or C(storage_info) of a
      container registry; a key without the kind's prefix gets it. Not used by V(executor).
    type: dict
    default: {}
  state:
    description: V(present) registers; V(absent) deregisters (an unknown id changes nothing).
    type: str
    choices: [present, absent]
    default: present
  api_url:
    description: Base URL of the registry of O(kind) (for V(executor), of the policies system).
    type: str
    required: true
  api_token:
    description: Bearer token sent with every request (for V(executor), one with the
      C(executors:manage) permission).
    type: str
  validate_certs:
    description: Whether to verify TLS certificates.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each request.
    type: int
    default: 30
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Reads the registration and reports whether it would change; writes nothing.
    support: full
  diff_mode:
    description: Shows the registration before and after.
    support: full
"""

EXAMPLES = r"""
- name: Register the assets registry of the cluster
  aios.platform.network_registration:
    kind: asset_registry
    id: cluster-west-1-assets
    name: ResNet Models registry
    metadata: {framework: PyTorch}
    tags: [image-classification]
    public_url: http://192.0.2.10:31700
    api_url: http://198.51.100.1:30104

- name: Register the cluster's policy executor with the policies system
  aios.platform.network_registration:
    kind: executor
    id: executor-001
    public_url: http://192.0.2.10:30900
    api_url: http://198.51.100.1:30102
    api_token: "{{ operator_token }}"
  register: executor
  no_log: true  # the answer holds the executor's token

- name: Deregister the adhoc inference server
  aios.platform.network_registration:
    kind: inference_server
    id: cluster-west-1-inference
    state: absent
    api_url: http://198.51.100.1:30105
"""

RETURN = r"""
registration:
  description: The registration after the change (for V(executor), C(id) and C(url)); empty
    after O(state=absent).
  type: dict
  returned: success
  sample: {"asset_registry_id": "cluster-west-1-assets", "asset_registry_name": "ResNet Models registry",
           "asset_registry_metadata": {"framework": "PyTorch"}, "asset_registry_tags": ["image-classification"],
           "asset_registry_public_url": "http://192.0.2.10:31700"}
executor_token:
  description: The executor's own token, issued by the policies system when the executor was
    registered by this run (never on later runs); the executor must accept it.
  type: str
  returned: when O(kind=executor) and the executor was registered by this run, outside check mode
executor_token_name:
  description: Name of that token in the policies system's token store.
  type: str
  returned: when O(kind=executor) and the executor was registered by this run, outside check mode
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aios.platform.plugins.module_utils.api_client import (
    API_ARGUMENT_SPEC,
    AiosApi,
    ApiError,
    path_segment,
)
from ansible_collections.aios.platform.plugins.module_utils.network_registration import (
    KINDS,
    differences,
    executor_document,
    find_executor,
    registry_document,
    registry_path,
    unwrap,
)


def registry(module, api):
    params = module.params
    kind = params["kind"]
    status, answer = api.request("GET", registry_path(kind, params["id"]), ok=(200, 404))
    found = unwrap(answer) if status == 200 else None
    if params["state"] == "absent":
        if found is None:
            return dict(changed=False, registration={})
        if not module.check_mode:
            api.request("DELETE", registry_path(kind, params["id"]), ok=(200, 204, 404))
        return dict(changed=True, registration={}, diff=dict(before=found, after={}))
    wanted = registry_document(kind, params["id"], params["name"] or params["id"],
                               params["public_url"], params["metadata"], params["tags"],
                               params["extra"])
    if found is not None and not differences(wanted, found):
        return dict(changed=False, registration=found)
    if not module.check_mode:
        if found is None:
            api.request("POST", registry_path(kind), body=wanted)
        else:
            api.request("PUT", registry_path(kind, params["id"]), body=wanted)
    return dict(changed=True, registration=wanted, diff=dict(before=found or {}, after=wanted))


def executor(module, api):
    params = module.params
    listing = api.request("GET", "/executors")[1]
    found = find_executor(listing, params["id"])
    path = "/executors/" + path_segment(params["id"])
    if params["state"] == "absent":
        if found is None:
            return dict(changed=False, registration={})
        if not module.check_mode:
            api.request("DELETE", path, ok=(200, 204, 404))
        return dict(changed=True, registration={}, diff=dict(before=found, after={}))
    wanted = executor_document(params["id"], params["public_url"])
    if found is not None and not differences(wanted, found):
        return dict(changed=False, registration={"id": found["id"], "url": found["url"]})
    result = dict(changed=True, registration=wanted,
                  diff=dict(before=found or {}, after=wanted))
    if module.check_mode:
        return result
    if found is not None:
        api.request("DELETE", path, ok=(200, 204, 404))
    answer = api.request("POST", "/executors", body=wanted)[1]
    answer = answer if isinstance(answer, dict) else {}
    result["registration"] = {"id": answer.get("id", wanted["id"]),
                              "url": answer.get("url", wanted["url"])}
    result["executor_token"] = answer.get("token", "")
    result["executor_token_name"] = answer.get("token_name", "")
    return result


def main():
    argument_spec = dict(
        kind=dict(type="str", required=True, choices=list(KINDS)),
        id=dict(type="str", required=True),
        name=dict(type="str"),
        public_url=dict(type="str"),
        metadata=dict(type="dict", default={}),
        tags=dict(type="list", elements="str", default=[]),
        extra=dict(type="dict", default={}),
        state=dict(type="str", choices=["present", "absent"], default="present"),
    )
    argument_spec.update(API_ARGUMENT_SPEC)
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=[("state", "present", ["public_url"])],
        supports_check_mode=True,
    )
    api = AiosApi(module)
    try:
        if module.params["kind"] == "executor":
            result = executor(module, api)
        else:
            result = registry(module, api)
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status)
    if not module._diff:
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
