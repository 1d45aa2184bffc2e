#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: policy
short_description: Publish an AIOS policy to the policy runtime, or remove it
version_added: 0.1.0
description:
  - Publishes a policy version from a policy directory (C(policy.py) and C(policy.json), as
    C(aios-policy test) uses) or a C(.py) file.
  - Published versions are immutable. The same code again changes nothing; different code
    under a published version fails and asks for a new version. Compile and contract errors
    are reported with their line numbers.
options:
  path:
    description: Policy directory or C(.py) file; required for O(state=present).
    type: path
  name:
    description: Policy name (default from C(policy.json)).
    type: str
  version:
    description: Version, e.g. C(v0.1.0) (default from C(policy.json)).
    type: str
  release_tag:
    description: Release tag, e.g. C(stable) (default from C(policy.json)).
    type: str
  description:
    description: Description (default from C(policy.json)).
    type: str
  settings:
    description: C(policy_settings) overriding C(policy.json).
    type: dict
  parameters:
    description: C(policy_parameters) overriding C(policy.json).
    type: dict
  policy_rule_uri:
    description: The URI to remove with O(state=absent), instead of name, version and release_tag.
    type: str
  state:
    description:
      - Publish or remove.
      - A removed URI is never published again, not even with the same code, so that a
        pre-check map cannot silently run different code under the same URI; publish a
        new version instead.
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - With O(state=absent), also remove a policy that clusters' pre-check maps or
        stability checkers still use; the removal is recorded in those clusters' decision
        logs, and their governed actions are denied until the maps point at another policy.
      - Without it, removing such a policy fails and names the clusters and actions using it.
    type: bool
    default: false
extends_documentation_fragment:
  - aios.platform.api
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Compares with what is published; changes nothing.
    support: full
  diff_mode:
    description: No diff is shown.
    support: none
"""

EXAMPLES = r"""
- name: Publish a pre-check policy
  aios.platform.policy:
    path: policies/examples/add-node-gpu-minimum
    api_url: http://127.0.0.1:8080
    api_token: "{{ aios_api_token }}"
"""

RETURN = r"""
policy_rule_uri:
  description: The published (or removed) URI.
  type: str
  returned: always
"""

import hashlib
import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aios.platform.plugins.module_utils.api_client import (
    API_ARGUMENT_SPEC,
    AiosApi,
    ApiError,
    path_segment,
)

SOURCE_NAMES = ("policy.py", os.path.join("code", "function.py"))


def load_document(module):
    path = module.params["path"]
    document = {}
    source = path
    if os.path.isdir(path):
        metadata = os.path.join(path, "policy.json")
        if os.path.exists(metadata):
            with open(metadata) as handle:
                document = json.load(handle)
        source = next((os.path.join(path, n) for n in SOURCE_NAMES
                       if os.path.isfile(os.path.join(path, n))), None)
        if source is None:
            module.fail_json(msg="policy directory %s has no policy.py or code/function.py" % path)
    try:
        with open(source) as handle:
            document["code"] = handle.read()
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot read policy file %s: %s" % (source, exc))
    for key in ("name", "version", "release_tag", "description"):
        if module.params[key] is not None:
            document[key] = module.params[key]
    if module.params["settings"] is not None:
        document["policy_settings"] = module.params["settings"]
    if module.params["parameters"] is not None:
        document["policy_parameters"] = module.params["parameters"]
    missing = [k for k in ("name", "version") if not document.get(k)]
    if missing:
        module.fail_json(msg="give %s (or put them in policy.json)" % " and ".join(missing))
    return document


def uri_of(document):
    tag = document.get("release_tag") or ""
    return "%s:%s-%s" % (document["name"], document["version"], tag) if tag else (
        "%s:%s" % (document["name"], document["version"]))


def present(module, api):
    document = load_document(module)
    uri = uri_of(document)
    status, current = api.request("GET", "/policies/%s" % path_segment(uri), ok=(200, 404))
    sha = hashlib.sha256(document["code"].encode("utf-8")).hexdigest()
    if status == 200 and current.get("code_sha256") == sha:
        return False, uri
    if status == 200:
        module.fail_json(msg="%s is already published with different code; published versions "
                             "are immutable, publish a new version" % uri)
    if module.check_mode:
        return True, uri
    try:
        api.request("POST", "/policies", body=document, ok=(200, 201))
    except ApiError as exc:
        error = exc.body.get("error") if isinstance(exc.body, dict) else None
        if error:
            module.fail_json(msg="%s cannot be published: %s: %s"
                             % (uri, error.get("type"), error.get("message")), error=error)
        raise
    return True, uri


def absent(module, api):
    uri = module.params["policy_rule_uri"] or uri_of(load_document(module))
    status = api.request("GET", "/policies/%s" % path_segment(uri), ok=(200, 404))[0]
    if status == 404:
        return False, uri
    if not module.check_mode:
        query = "?force=true" if module.params["force"] else ""
        api.request("DELETE", "/policies/%s%s" % (path_segment(uri), query), ok=(204, 404))
    return True, uri


def main():
    spec = dict(
        path=dict(type="path"),
        name=dict(type="str"),
        version=dict(type="str"),
        release_tag=dict(type="str"),
        description=dict(type="str"),
        settings=dict(type="dict"),
        parameters=dict(type="dict"),
        policy_rule_uri=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        force=dict(type="bool", default=False),
    )
    spec.update(API_ARGUMENT_SPEC)
    module = AnsibleModule(
        argument_spec=spec,
        required_if=[("state", "present", ("path",)),
                     ("state", "absent", ("path", "policy_rule_uri"), True)],
        supports_check_mode=True,
    )
    api = AiosApi(module)
    try:
        if module.params["state"] == "present":
            changed, uri = present(module, api)
        else:
            changed, uri = absent(module, api)
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status, response=exc.body)
    module.exit_json(changed=changed, policy_rule_uri=uri)


if __name__ == "__main__":
    main()
