"""A Kubernetes pod as a NuNet DMS job (the payload of ``POST /orchestrator/postJob``).

``job`` is the image, ``jobparams`` the command and arguments, ``jobenv`` the environment
(values and config map references; never secrets), ``requiredCapability`` the resources
asked for: CPU cores, RAM in MiB and, from an extended resource such as
``nunet.io/gpu.nvidia.rtx.3080.10gb`` or ``nvidia.com/gpu``, the GPU brand, model, VRAM
and count; ``executor: docker``; ``time.max_time`` from ``activeDeadlineSeconds``.
DMS runs one image per job, so a pod with more than one container (init containers
included) is refused with a reason rather than cut down.
"""

from __future__ import annotations

import math
import shlex
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from interlink_nunet.resources import GpuModel

GENERIC_GPU = {"nvidia.com/gpu": "nvidia", "amd.com/gpu": "amd", "gpu.intel.com/i915": "intel"}
LEGACY_GPU_PREFIX = "nunet.gpu."  # the seed's names, without a domain


class PodRejected(ValueError):
    """The pod cannot run as a NuNet job; the message names the field and the fix."""


def pod_identity(pod: dict) -> tuple[str, str, str]:
    metadata = pod.get("metadata") or {}
    uid, name = metadata.get("uid"), metadata.get("name")
    if not uid or not name:
        raise PodRejected("metadata.uid and metadata.name are required (the pod as Kubernetes "
                          "stores it)")
    return uid, name, metadata.get("namespace") or "default"


def build_job(pod: dict, config_maps: list[dict], prefix: str,
              gpu_models: dict[str, GpuModel]) -> dict[str, Any]:
    _, name, namespace = pod_identity(pod)
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    extra = [c.get("name") for c in spec.get("initContainers") or []]
    if len(containers) != 1 or extra:
        names = [c.get("name") for c in containers] + [f"init:{n}" for n in extra]
        raise PodRejected(
            f"pod {namespace}/{name} has containers {names}: a NuNet DMS job runs exactly one "
            "image; run one container per pod on this node"
        )
    container = containers[0]
    if not container.get("image"):
        raise PodRejected(f"spec.containers[0].image of pod {namespace}/{name} is empty")
    params = [*(container.get("command") or []), *(container.get("args") or [])]
    job: dict[str, Any] = {
        "job": container["image"],
        "jobparams": shlex.join(str(p) for p in params),
        "jobenv": environment(container, config_maps, where=f"pod {namespace}/{name}"),
        "requiredCapability": {
            "executor": "docker",
            "type": {"description": "batch"},
            "resources": resources(container, prefix, gpu_models,
                                   where=f"pod {namespace}/{name}"),
        },
    }
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None:
        job["requiredCapability"]["time"] = {"units": "seconds", "max_time": int(deadline)}
    return job


def environment(container: dict, config_maps: list[dict], where: str) -> dict[str, str]:
    maps = {(cm.get("metadata") or {}).get("name"): cm.get("data") or {} for cm in config_maps}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if source.get("secretRef"):
            raise _secret(where, f"envFrom secretRef {source['secretRef'].get('name')!r}")
        ref = source.get("configMapRef") or {}
        data = _config_map(maps, ref.get("name"), ref.get("optional"), where)
        env.update({source.get("prefix", "") + k: str(v) for k, v in data.items()})
    for variable in container.get("env") or []:
        name, source = variable.get("name"), variable.get("valueFrom")
        if source is None:
            env[name] = str(variable.get("value") or "")
        elif source.get("secretKeyRef"):
            raise _secret(where, f"env {name!r} (secretKeyRef)")
        elif source.get("configMapKeyRef"):
            ref = source["configMapKeyRef"]
            data = _config_map(maps, ref.get("name"), ref.get("optional"), where)
            if ref.get("key") in data:
                env[name] = str(data[ref["key"]])
            elif not ref.get("optional"):
                raise PodRejected(f"{where}: env {name!r} needs key {ref.get('key')!r} of config "
                                  f"map {ref.get('name')!r}, which it does not have")
        else:
            raise PodRejected(f"{where}: env {name!r} uses {sorted(source)}; a NuNet job only "
                              "takes values and config map keys")
    return env


def _config_map(maps: dict, name: str | None, optional: bool | None, where: str) -> dict:
    if name in maps:
        return maps[name]
    if optional:
        return {}
    raise PodRejected(f"{where}: config map {name!r} was not sent with the pod; interLink "
                      "sends the config maps a pod references, so create it in the namespace")


def _secret(where: str, what: str) -> PodRejected:
    return PodRejected(f"{where}: {what} refers to a Secret; the NuNet plugin never sends "
                       "secrets to DMS in plain text. Use a config map, or fetch the secret "
                       "inside the job")


def _requested(resources: dict, name: str) -> Decimal | None:
    """A container resource: its limit, else its request."""
    for kind in ("limits", "requests"):
        value = (resources.get(kind) or {}).get(name)
        if value is not None:
            return parse_quantity(value)
    return None


def resources(container: dict, prefix: str, gpu_models: dict[str, GpuModel],
              where: str) -> dict[str, Any]:
    wanted = container.get("resources") or {}
    try:
        cpu = _requested(wanted, "cpu")
        memory = _requested(wanted, "memory")
        gpus = {
            name: _requested(wanted, name)
            for name in {*(wanted.get("limits") or {}), *(wanted.get("requests") or {})}
            if name.startswith((f"{prefix}/gpu.", LEGACY_GPU_PREFIX)) or name in GENERIC_GPU
        }
    except ValueError as exc:
        raise PodRejected(f"{where}: a resource quantity is invalid: {exc}") from None
    result: dict[str, Any] = {
        "cpu": {"cores": math.ceil(cpu) if cpu else 1},
        "ram": math.ceil(memory / 2**20) if memory else 0,
    }
    gpus = {name: count for name, count in gpus.items() if count}
    if len(gpus) > 1:
        raise PodRejected(f"{where}: asks for several GPU kinds {sorted(gpus)}; a NuNet job "
                          "takes one GPU model")
    if gpus:
        ((name, count),) = gpus.items()
        result["gpu"] = {**_gpu(name, prefix, gpu_models), "count": int(count)}
    return result


def _gpu(resource: str, prefix: str, gpu_models: dict[str, GpuModel]) -> dict[str, Any]:
    if resource in GENERIC_GPU:
        return {"brand": GENERIC_GPU[resource]}
    name = resource.removeprefix(f"{prefix}/")
    if name.startswith(LEGACY_GPU_PREFIX):
        name = name.removeprefix("nunet.")
    known = gpu_models.get(name)
    if known is not None:
        return {"brand": known.vendor, "model": known.model, "vram": int(known.vram_mib)}
    # Not seen among the peers (yet): ask for what the name says.
    parts = name.split(".")[1:]  # drop "gpu"
    size = parts.pop() if parts and parts[-1].endswith("gb") and parts[-1][:-2].isdigit() else ""
    gpu: dict[str, Any] = {"brand": parts[0] if parts else "other",
                           "model": " ".join(parts[1:]).upper()}
    if size:
        gpu["vram"] = int(size[:-2]) * 1024
    return gpu
