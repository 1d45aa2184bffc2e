#!/usr/bin/python
# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: gpu_facts
short_description: GPU facts of a node, in the AIOS cluster document's shape
version_added: 0.1.0
description:
  - Runs C(nvidia-smi) and returns the node's C(gpus) block of the cluster document
    (count, total memory in MiB, each GPU's model and memory, model names, features),
    the driver and CUDA versions, and the GPU host prerequisites (driver 450 or newer, an
    NVIDIA container runtime in containerd or CRI-O, or Docker 19.03 or newer with the NVIDIA
    toolkit).
  - Without C(nvidia-smi) the node has no GPUs (C(count=0)); a C(nvidia-smi) that fails is an error.
  - With O(annotate_node), writes the node annotation C(gpu.aios/info) that upstream AIOS
    tools read (a compact JSON list of C({"modelName", "memory"})) through the Kubernetes API.
options:
  annotate_node:
    description: Name of the Kubernetes node to annotate; omit to only gather facts.
    type: str
  kubeconfig:
    description: Kubeconfig for O(annotate_node); default discovery or in-cluster auth.
    type: path
  context:
    description: Kubeconfig context for O(annotate_node).
    type: str
  require_gpu_prereqs:
    description: Fail, listing every missing prerequisite, unless the GPU host prerequisites hold.
    type: bool
    default: false
requirements:
  - kubernetes (only for O(annotate_node))
author:
  - AIOS platform contributors (@aios-platform)
attributes:
  check_mode:
    description: Gathers facts; reports whether the annotation would change without writing it.
    support: full
  diff_mode:
    description: Shows the annotation before and after.
    support: full
"""

EXAMPLES = r"""
- name: Gather GPU facts and annotate this host's node
  aios.platform.gpu_facts:
    annotate_node: "{{ inventory_hostname }}"
    require_gpu_prereqs: true
  delegate_facts: false
"""

RETURN = r"""
gpus:
  description: The node's gpus block of the cluster document.
  type: dict
  returned: always
driver_version:
  description: The NVIDIA driver version, when there is a GPU.
  type: str
  returned: always
cuda_version:
  description: The CUDA version nvidia-smi reports, when there is a GPU.
  type: str
  returned: always
prerequisites:
  description: Each GPU host prerequisite and whether it holds, plus the problems found.
  type: dict
  returned: always
annotation:
  description: The gpu.aios/info value for this node.
  type: str
  returned: always
"""

import glob
import json

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.aios.platform.plugins.module_utils import gpu
from ansible_collections.aios.platform.plugins.module_utils.k8s import core_v1

# Container runtime configuration that mentions the NVIDIA runtime.
RUNTIME_CONFIGS = ("/etc/containerd/config.toml", "/etc/containerd/conf.d/*.toml",
                   "/etc/crio/crio.conf", "/etc/crio/crio.conf.d/*")


def read_gpus(module):
    binary = module.get_bin_path("nvidia-smi")
    if binary is None:
        return [], None
    rc, out, err = module.run_command([binary, "--query-gpu=%s" % gpu.QUERY,
                                       "--format=csv,noheader,nounits"])
    if rc != 0:
        module.fail_json(msg="nvidia-smi failed (exit %d): %s" % (rc, (err or out).strip()))
    try:
        gpus = gpu.parse_gpus(out)
    except gpu.NvidiaSmiError as exc:
        module.fail_json(msg=str(exc))
    summary = module.run_command([binary])[1]
    return gpus, gpu.cuda_version(summary)


def runtime_configured():
    for pattern in RUNTIME_CONFIGS:
        for path in glob.glob(pattern):
            try:
                with open(path) as handle:
                    if "nvidia" in handle.read():
                        return True
            except (IOError, OSError):
                continue
    return False


def prerequisites(module, gpus):
    docker_version = None
    docker = module.get_bin_path("docker")
    if docker:
        rc, out = module.run_command([docker, "version", "--format", "{{.Server.Version}}"])[:2]
        docker_version = out.strip() if rc == 0 else None
    toolkit = bool(module.get_bin_path("nvidia-ctk") or
                   module.get_bin_path("nvidia-container-runtime"))
    cri = runtime_configured()
    docker_ok = bool(docker_version) and gpu.version_at_least(docker_version, "19.03") and toolkit
    problems = []
    if not gpus:
        problems.append("no NVIDIA GPU found (nvidia-smi missing or reports none)")
    problems += gpu.driver_problems(gpus)
    if not (cri or docker_ok):
        problems.append("no NVIDIA container runtime: configure it in containerd or CRI-O, "
                        "or use Docker 19.03 or newer with the NVIDIA container toolkit")
    return {"driver_ok": bool(gpus) and not gpu.driver_problems(gpus), "cri_nvidia_runtime": cri,
            "docker_version": docker_version, "nvidia_toolkit": toolkit, "problems": problems}


def annotate(module, node_name, value):
    """(changed, before) of writing the annotation."""
    core = core_v1(module)
    try:
        node = json.loads(core.read_node(node_name, _preload_content=False).data)
        before = (node["metadata"].get("annotations") or {}).get(gpu.ANNOTATION_KEY)
        if before == value:
            return False, before
        if not module.check_mode:
            core.patch_node(node_name, {"metadata": {"annotations": {gpu.ANNOTATION_KEY: value}}},
                            _preload_content=False)
        return True, before
    except Exception as exc:  # the kubernetes client raises many kinds
        module.fail_json(msg="cannot annotate node %s: %s" % (node_name, exc))


def main():
    module = AnsibleModule(
        argument_spec=dict(
            annotate_node=dict(type="str"),
            kubeconfig=dict(type="path"),
            context=dict(type="str"),
            require_gpu_prereqs=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    gpus, cuda = read_gpus(module)
    prereqs = prerequisites(module, gpus)
    if module.params["require_gpu_prereqs"] and prereqs["problems"]:
        module.fail_json(msg="GPU host prerequisites missing: " + "; ".join(prereqs["problems"]),
                         prerequisites=prereqs)
    value = gpu.annotation(gpus)
    changed, before = False, None
    if module.params["annotate_node"]:
        changed, before = annotate(module, module.params["annotate_node"], value)
    module.exit_json(
        changed=changed, gpus=gpu.gpus_block(gpus),
        driver_version=gpus[0]["driver"] if gpus else None, cuda_version=cuda,
        prerequisites=prereqs, annotation=value,
        diff={"before": (before or "") + "\n", "after": value + "\n"},
    )


if __name__ == "__main__":
    main()
