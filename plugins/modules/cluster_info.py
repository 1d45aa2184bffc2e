#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster_info
short_description: Read clusters from the AIOS clusters registry
version_added: 0.1.0
description:
  - Returns one cluster by O(id), or the clusters matching a MongoDB O(filter) (the
    registry's operator allow-list applies).
options:
  id:
    description: The cluster to read.
    type: str
  filter:
    description: "A MongoDB filter, for example on C(regionId) or C(gpus.count)."
    type: dict
  limit:
    description: At most this many clusters for O(filter) (up to 1000).
    type: int
    default: 100
  fields:
    description: Only these fields of each cluster (comma list).
    type: str
extends_documentation_fragment:
  - aios.platform.api
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Reads only.
    support: full
  diff_mode:
    description: No diff is shown.
    support: none
"""

EXAMPLES = r"""
- name: Clusters with at least two GPUs in the USA
  aios.platform.cluster_info:
    filter:
      gpus.count: {$gte: 2}
      clusterMetadata.countries: {$in: [USA]}
    api_url: http://127.0.0.1:8080
    api_token: "{{ aios_api_token }}"
"""

RETURN = r"""
clusters:
  description: The clusters found (one for O(id), none when it does not exist).
  type: list
  elements: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aios.platform.plugins.module_utils.api_client import (
    API_ARGUMENT_SPEC,
    AiosApi,
    ApiError,
    path_segment,
)


def main():
    spec = dict(id=dict(type="str"), filter=dict(type="dict"),
                limit=dict(type="int", default=100), fields=dict(type="str"))
    spec.update(API_ARGUMENT_SPEC)
    module = AnsibleModule(argument_spec=spec, mutually_exclusive=[("id", "filter")],
                           required_one_of=[("id", "filter")], supports_check_mode=True)
    api = AiosApi(module)
    try:
        if module.params["id"]:
            status, cluster = api.request("GET", "/clusters/%s" % path_segment(module.params["id"]),
                                          ok=(200, 404))
            clusters = [cluster] if status == 200 else []
        else:
            params = {"limit": module.params["limit"]}
            if module.params["fields"]:
                params["fields"] = module.params["fields"]
            clusters = api.request("POST", "/clusters/query", params=params,
                                   body=module.params["filter"])[1]
    except ApiError as exc:
        module.fail_json(msg=str(exc), status=exc.status, response=exc.body)
    module.exit_json(changed=False, clusters=clusters)


if __name__ == "__main__":
    main()
