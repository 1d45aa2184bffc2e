#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: policy_execution_mode
short_description: Switch a cluster controller between local and remote policy execution
version_added: 0.1.0
description:
  - Sets C(POLICY_EXECUTION_MODE) and C(POLICY_SYSTEM_EXECUTOR_ID) in the environment of the
    policy container of the Deployment C(<cluster_id>-controller), as the kubectl patch of
    upstream AIOS's onboarding does, but merged with the container's other variables instead of replacing them.
  - The container is chosen by name; when no container has that name the module falls back to
    the second container (index 1), the one upstream AIOS's onboarding patches, and warns.
  - The patch is a JSON patch that first tests the container's name, so a Deployment changed
    in between is refused instead of patched in the wrong place.
options:
  cluster_id:
    description: The cluster whose controller to switch.
    type: str
    required: true
  mode:
    description: V(remote) offloads policy execution to O(executor_id); V(local) runs policies
      in the controller and clears the executor.
    type: str
    choices: [local, remote]
    required: true
  executor_id:
    description: The remote policy executor; required when O(mode=remote).
    type: str
  namespace:
    description: Namespace of the controller Deployment.
    type: str
    default: controllers
  deployment:
    description: Name of the controller Deployment; default C(<cluster_id>-controller).
    type: str
  container:
    description: Name of the policy container.
    type: str
    default: policy-runtime
  kubeconfig:
    description: Kubeconfig file; default discovery or in-cluster auth.
    type: path
  context:
    description: Kubeconfig context.
    type: str
requirements:
  - kubernetes
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Reads the Deployment and reports whether it would change; patches nothing.
    support: full
  diff_mode:
    description: Shows the container's environment before and after.
    support: full
"""

EXAMPLES = r"""
- name: Offload governance policies to a remote executor
  aios.platform.policy_execution_mode:
    cluster_id: cluster-west-vision-001
    mode: remote
    executor_id: executor-gpu-01

- name: Run governance policies in the controller again
  aios.platform.policy_execution_mode:
    cluster_id: cluster-west-vision-001
    mode: local
"""

RETURN = r"""
container:
  description: Name and index of the container that was (or would be) patched.
  type: dict
  returned: success
  sample: {"name": "policy-runtime", "index": 1}
env:
  description: The container's environment after the change.
  type: list
  elements: dict
  returned: success
"""

import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aios.platform.plugins.module_utils.k8s import apps_v1

MODE_VARIABLE = "POLICY_EXECUTION_MODE"
EXECUTOR_VARIABLE = "POLICY_SYSTEM_EXECUTOR_ID"


def wanted_variables(mode, executor_id):
    """The two variables of a mode; local clears the executor, as upstream AIOS's onboarding does."""
    return {MODE_VARIABLE: mode, EXECUTOR_VARIABLE: executor_id if mode == "remote" else ""}


def env_entry(name, value):
    """An env entry as the API server stores it: an empty value is omitted (it reads back
    without ``value``, and the variable is set to the empty string in the container)."""
    return {"name": name, "value": value} if value else {"name": name}


def merge_env(env, variables):
    """The env list with ``variables`` set: existing entries (also valueFrom ones) are replaced
    in place, missing ones appended, every other entry kept in its order."""
    merged, seen = [], set()
    for entry in env:
        name = entry.get("name")
        if name in variables:
            merged.append(env_entry(name, variables[name]))
            seen.add(name)
        else:
            merged.append(entry)
    merged.extend(env_entry(name, value)
                  for name, value in variables.items() if name not in seen)
    return merged


def pick_container(containers, name):
    """(index, warning) of the container named ``name``, else of index 1 (upstream's policy container)."""
    for index, container in enumerate(containers):
        if container.get("name") == name:
            return index, None
    names = ", ".join(c.get("name", "?") for c in containers)
    if len(containers) < 2:
        return None, None
    return 1, ("no container named %s (containers: %s); patching container 1 (%s) as upstream AIOS's onboarding does"
               % (name, names, containers[1].get("name")))


def json_patch(index, container_name, env):
    """A JSON patch that refuses to apply when the container at ``index`` changed name."""
    base = "/spec/template/spec/containers/%d" % index
    return [{"op": "test", "path": base + "/name", "value": container_name},
            {"op": "add", "path": base + "/env", "value": env}]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            cluster_id=dict(type="str", required=True),
            mode=dict(type="str", required=True, choices=["local", "remote"]),
            executor_id=dict(type="str"),
            namespace=dict(type="str", default="controllers"),
            deployment=dict(type="str"),
            container=dict(type="str", default="policy-runtime"),
            kubeconfig=dict(type="path"),
            context=dict(type="str"),
        ),
        required_if=[("mode", "remote", ["executor_id"])],
        supports_check_mode=True,
    )
    params = module.params
    name = params["deployment"] or "%s-controller" % params["cluster_id"]
    namespace = params["namespace"]
    apps = apps_v1(module)
    try:
        deployment = json.loads(
            apps.read_namespaced_deployment(name, namespace, _preload_content=False).data)
    except Exception as exc:  # the kubernetes client raises many kinds
        module.fail_json(msg="cannot read Deployment %s/%s: %s" % (namespace, name, exc))

    containers = deployment["spec"]["template"]["spec"]["containers"]
    index, warning = pick_container(containers, params["container"])
    if index is None:
        module.fail_json(msg="Deployment %s/%s has no container named %s and no second container "
                             "to fall back to" % (namespace, name, params["container"]))
    if warning:
        module.warn(warning)
    container = containers[index]
    before = container.get("env") or []
    after = merge_env(before, wanted_variables(params["mode"], params["executor_id"]))
    changed = after != before
    if changed and not module.check_mode:
        try:
            apps.patch_namespaced_deployment(name, namespace,
                                             json_patch(index, container["name"], after),
                                             _preload_content=False)
        except Exception as exc:
            module.fail_json(msg="cannot patch Deployment %s/%s: %s" % (namespace, name, exc))
    module.exit_json(changed=changed, container={"name": container["name"], "index": index},
                     env=after, diff={"before": {"env": before}, "after": {"env": after}})


if __name__ == "__main__":
    main()
