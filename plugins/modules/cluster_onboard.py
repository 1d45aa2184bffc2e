#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: cluster_onboard
short_description: Build an AIOS cluster document from its nodes and onboard it
version_added: 0.1.0
description:
  - Builds the cluster document of the clusters registry from a cluster config
    (upstream AIOS's onboarding C(config.json)) and the cluster's nodes, validates it with the registry's own
    model, writes it as C(<dest>/<cluster_id>_populated.json) for inspection and, with
    O(onboard=true), submits it to the network's parser (C(POST <api_url>/api/createCluster)
    in its Parser/V1 envelope). A cluster already registered gets its node-derived fields
    (nodes, gpus, vcpus, memory, swap, storage, network) refreshed; its other fields belong
    to the registry and its governance, and a config that differs there is only a warning.
  - Upstream AIOS's sample config is accepted as it is, its C(nodes.nodesData) read as
    C(nodes.nodeData). Without C(config.urlMap), the map is derived from C(config.publicHostname)
    by upstream's convention (C(useGateway=true), the default, through the cluster's gateway on
    port 32000 under C(/controller), C(/metrics), C(/blocks), C(/) and C(/mgmt); C(useGateway=false)
    on NodePorts 32300, 32301, 32302, 32000, 32303 and 30501 for C(membershipServer)), and
    returned as RV(assumed).
  - GPUs come from each node's C(gpu.aios/info) annotation (see M(aios.platform.gpu_facts)).
    Memory, swap and storage are in MiB. Kubernetes does not report the number of disks or
    network bandwidth; those get defaults, returned as RV(defaults).
options:
  config:
    description: The cluster config (id, regionId, clusterMetadata, config, tags ...).
    type: dict
  config_file:
    description: A JSON file holding the cluster config, instead of O(config).
    type: path
  nodes_from:
    description: Read the nodes from the Kubernetes API, or from a file of C(kubectl get nodes -o json).
    type: str
    choices: [api, file]
    default: api
  nodes_file:
    description: The C(kubectl get nodes -o json) output when O(nodes_from=file).
    type: path
  gpu_annotations:
    description:
      - Node name to a C(gpu.aios/info) value (the RV(aios.platform.gpu_facts#module:annotation)
        of M(aios.platform.gpu_facts)) that stands in for the node's own annotation, for GPU
        facts gathered but not written to the nodes, as with O(nodes_from=file).
    type: dict
  kubeconfig:
    description: Kubeconfig for O(nodes_from=api); default the usual discovery or in-cluster auth.
    type: path
  context:
    description: Kubeconfig context for O(nodes_from=api).
    type: str
  dest:
    description: Directory for C(<cluster_id>_populated.json).
    type: path
    default: .
  onboard:
    description: Submit the document to the network (else only write the file).
    type: bool
    default: false
  api_url:
    description: Base URL of the network's API (parser and clusters registry), required with O(onboard=true).
    type: str
  api_token:
    description: Bearer token of the API.
    type: str
  validate_certs:
    description: Verify the API's TLS certificate.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for each API call.
    type: int
    default: 30
requirements:
  - pydantic >= 2 (the registry's cluster model)
  - kubernetes (only for O(nodes_from=api))
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Builds and validates the document; writes and submits nothing.
    support: full
  diff_mode:
    description: Shows the populated file before and after.
    support: full
"""

EXAMPLES = r"""
- name: Build the document from the cluster's nodes and inspect it
  aios.platform.cluster_onboard:
    config_file: config.json
    dest: build/onboarding

- name: Onboard an air-gapped cluster from saved node data
  aios.platform.cluster_onboard:
    config_file: config.json
    nodes_from: file
    nodes_file: nodes.json
    onboard: true
    api_url: http://parser.example.net:30500
    api_token: "{{ aios_api_token }}"
"""

RETURN = r"""
cluster:
  description: The validated cluster document.
  type: dict
  returned: always
path:
  description: The populated file.
  type: str
  returned: always
registered:
  description: What onboarding did, C(created), C(updated) or C(unchanged); C(none) without O(onboard).
  type: str
  returned: always
defaults:
  description: The values assumed because Kubernetes does not report them.
  type: dict
  returned: always
assumed:
  description:
    - What the config left out and onboarding derived, by dotted path; C(config.urlMap) when
      the map was derived from C(config.publicHostname). Empty when nothing was derived.
  type: dict
  returned: always
  sample:
    config.urlMap:
      controllerService: http://203.0.113.7:32000/controller
      metricsService: http://203.0.113.7:32000/metrics
      blocksQuery: http://203.0.113.7:32000/blocks
      publicGateway: http://203.0.113.7:32000
      parameterUpdater: http://203.0.113.7:32000/mgmt
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.aios.platform.plugins.module_utils import onboarding
from ansible_collections.aios.platform.plugins.module_utils.api_client import (
    AiosApi,
    ApiError,
    path_segment,
)
from ansible_collections.aios.platform.plugins.module_utils.cluster_document import (
    HAS_PYDANTIC,
    PYDANTIC_IMPORT_ERROR,
)
from ansible_collections.aios.platform.plugins.module_utils.k8s import core_v1


def read_json(module, path, what):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError) as exc:
        module.fail_json(msg="cannot read %s %s: %s" % (what, path, exc))
    except ValueError as exc:
        module.fail_json(msg="%s %s is not valid JSON: %s" % (what, path, exc))


def nodes_from_api(module):
    core = core_v1(module)
    try:
        return json.loads(core.list_node(_preload_content=False).data)["items"]
    except Exception as exc:  # the kubernetes client raises many kinds
        module.fail_json(msg="cannot read the nodes from the Kubernetes API: %s" % exc)


def validated(module, document):
    from ansible_collections.aios.platform.plugins.module_utils.cluster_document import (
        ClusterDocument,
    )
    from pydantic import ValidationError

    try:
        return ClusterDocument.model_validate(document).model_dump(mode="json")
    except ValidationError as exc:
        problems = ["%s: %s" % (".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        module.fail_json(msg="the cluster document is invalid: " + "; ".join(problems[:10]),
                         errors=problems)


def differing_config(config, current):
    """The top-level fields of the given config that the registered cluster holds otherwise,
    ignoring the governance settings that other tools own inside ``config``."""
    differing = []
    for key, value in config.items():
        if key in onboarding.NODE_FIELDS:
            continue  # onboarding computes these from the nodes
        registered = current.get(key)
        if key == "config" and isinstance(value, dict) and isinstance(registered, dict):
            value = dict((k, v) for k, v in value.items() if k not in onboarding.GOVERNED_CONFIG)
            # Keys the config leaves to the model's defaults are not compared either.
            registered = dict((k, v) for k, v in registered.items() if k in value)
        if registered != value:
            differing.append(key)
    return sorted(differing)


def register(module, document, config):
    """(created, updated or unchanged, the registered document) against the network's
    registry. A registered cluster only gets its node-derived fields refreshed: its other
    fields belong to the registry and its governance (see M(aios.platform.cluster)), so a
    config that differs there is a warning, not an overwrite."""
    api = AiosApi(module)
    cluster_id = document["id"]
    status, current = api.request("GET", "/clusters/%s" % path_segment(cluster_id), ok=(200, 404))
    if status == 200:
        changes = dict((k, document[k]) for k in onboarding.NODE_FIELDS
                       if current.get(k) != document.get(k))
        others = differing_config(dict((k, v) for k, v in config.items() if k != "id"), current)
        if others:
            module.warn("cluster %s is registered with other values of %s than the config; "
                        "onboarding refreshes node data only, change those with "
                        "aios.platform.cluster" % (cluster_id, ", ".join(others)))
        if not changes:
            return "unchanged", current
        if module.check_mode:
            return "updated", dict(current, **changes)
        updated = api.request("PUT", "/clusters/%s" % path_segment(cluster_id),
                              body={"$set": changes})[1]
        return "updated", updated
    if module.check_mode:
        return "created", document
    answer = api.request("POST", "/api/createCluster", body=onboarding.parser_envelope(document))[1]
    # The upstream parser answers 2xx with success: false when the create failed.
    if not isinstance(answer, dict) or answer.get("success") is False:
        raise ApiError("the parser did not create the cluster: %s" % (answer,))
    return "created", answer.get("data", document)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            config=dict(type="dict"),
            config_file=dict(type="path"),
            nodes_from=dict(type="str", choices=["api", "file"], default="api"),
            nodes_file=dict(type="path"),
            gpu_annotations=dict(type="dict"),
            kubeconfig=dict(type="path"),
            context=dict(type="str"),
            dest=dict(type="path", default="."),
            onboard=dict(type="bool", default=False),
            api_url=dict(type="str"),
            api_token=dict(type="str", no_log=True),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="int", default=30),
        ),
        mutually_exclusive=[("config", "config_file")],
        required_one_of=[("config", "config_file")],
        required_if=[("nodes_from", "file", ("nodes_file",)), ("onboard", True, ("api_url",))],
        supports_check_mode=True,
    )
    if not HAS_PYDANTIC:
        module.fail_json(msg=missing_required_lib("pydantic"), exception=PYDANTIC_IMPORT_ERROR)
    params = module.params
    config = params["config"] or read_json(module, params["config_file"], "cluster config")
    if not isinstance(config, dict) or not config.get("id"):
        module.fail_json(msg="the cluster config must be a JSON object with an id")
    if params["nodes_from"] == "file":
        nodes = read_json(module, params["nodes_file"], "nodes file")
        nodes = nodes.get("items", []) if isinstance(nodes, dict) else nodes
    else:
        nodes = nodes_from_api(module)
    config, assumed = onboarding.normalise_config(config)
    document, warnings = onboarding.build_document(config, nodes, params["gpu_annotations"])
    for warning in warnings:
        module.warn(warning)
    document = validated(module, document)

    path = os.path.join(params["dest"], "%s_populated.json" % document["id"])
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    try:
        with open(path) as handle:
            before = handle.read()
    except (IOError, OSError):
        before = ""
    changed = before != text
    if changed and not module.check_mode:
        if not os.path.isdir(params["dest"]):
            os.makedirs(params["dest"])
        with open(path, "w") as handle:
            handle.write(text)

    registered = "none"
    if params["onboard"]:
        try:
            registered, document = register(module, document, config)
        except ApiError as exc:
            module.fail_json(msg=str(exc), status=exc.status, response=exc.body)
        changed = changed or registered != "unchanged"
    module.exit_json(
        changed=changed, cluster=document, path=path, registered=registered,
        defaults=onboarding.DEFAULTS, assumed=assumed,
        diff={"before": before, "after": text, "before_header": path, "after_header": path},
    )


if __name__ == "__main__":
    main()
