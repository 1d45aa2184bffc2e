# Copyright: AIOS platform contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""GPU facts from nvidia-smi, in the cluster document's node ``gpus`` shape."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

# The columns gpu_facts asks nvidia-smi for, in order.
QUERY = "name,memory.total,driver_version,compute_cap,mig.mode.current"
ANNOTATION_KEY = "gpu.aios/info"
MIN_DRIVER_MAJOR = 450
_CUDA = re.compile(r"CUDA Version:\s*([0-9.]+)")


class NvidiaSmiError(ValueError):
    """nvidia-smi printed something that is not the queried CSV."""


def parse_gpus(csv_text):
    """One dict per GPU from ``nvidia-smi --query-gpu=<QUERY> --format=csv,noheader,nounits``."""
    gpus = []
    for number, line in enumerate((csv_text or "").splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(QUERY.split(",")):
            raise NvidiaSmiError("nvidia-smi line %d has %d fields, expected %d: %r"
                                 % (number, len(fields), len(QUERY.split(",")), line))
        name, memory, driver, capability, mig = fields
        try:
            memory_mib = int(float(memory))
        except ValueError:
            raise NvidiaSmiError("nvidia-smi line %d: memory.total %r is not a number"
                                 % (number, memory)) from None
        gpus.append({"modelName": name, "memory": memory_mib, "driver": driver,
                     "compute_cap": capability, "mig": mig.lower() == "enabled"})
    return gpus


def features(gpu):
    """Capabilities upstream lists as features (fp16, tensor_cores, fp8, mig)."""
    found = []
    try:
        capability = float(gpu["compute_cap"])
    except (TypeError, ValueError):
        capability = 0.0
    if capability >= 5.3:
        found.append("fp16")
    if capability >= 7.0:
        found.append("tensor_cores")
    if capability >= 8.9:
        found.append("fp8")
    if gpu.get("mig"):
        found.append("mig")
    return found


def gpus_block(gpus):
    """The node's ``gpus`` block of the cluster document."""
    merged = []
    for gpu in gpus:
        for feature in features(gpu):
            if feature not in merged:
                merged.append(feature)
    return {
        "count": len(gpus),
        "memory": sum(g["memory"] for g in gpus),
        "gpus": [{"modelName": g["modelName"], "memory": g["memory"]} for g in gpus],
        "features": merged,
        "modelNames": sorted(set(g["modelName"] for g in gpus)),
    }


def annotation(gpus):
    """The gpu.aios/info value upstream's gpu_info.sh writes: a compact JSON list."""
    return json.dumps([{"modelName": g["modelName"], "memory": g["memory"]} for g in gpus],
                      separators=(",", ":"))


def cuda_version(summary_text):
    match = _CUDA.search(summary_text or "")
    return match.group(1) if match else None


def driver_problems(gpus):
    """Drivers older than the minimum the GPU host prerequisites ask for."""
    problems = []
    for gpu in gpus:
        try:
            major = int(str(gpu["driver"]).split(".", maxsplit=1)[0])
        except ValueError:
            problems.append("cannot read the driver version %r" % gpu["driver"])
            continue
        if major < MIN_DRIVER_MAJOR:
            problems.append("NVIDIA driver %s is older than %d" % (gpu["driver"], MIN_DRIVER_MAJOR))
            break
    return problems


def version_at_least(version, minimum):
    """Compare dotted versions ("20.10.7" >= "19.03")."""
    def parts(text):
        return [int(p) for p in re.findall(r"[0-9]+", str(text))[:3]]

    return parts(version) >= parts(minimum)
