"""A Kubernetes pod as a NuNet DMS job (the payload of ``POST /orchestrator/postJob``).

``job`` is the image, ``jobparams`` the command and arguments, ``jobenv`` the environment
(values and config map references; never secret references: a value the virtual kubelet
already resolved from a Secret arrives as a plain value and cannot be told apart),
``requiredCapability`` the resources asked for: CPU cores, RAM in MiB and, from an
extended resource such as ``nunet.io/gpu.nvidia.rtx.3080.10gb`` or ``nvidia.com/gpu``,
the GPU brand, model, VRAM and count; ``executor: docker``; ``time.max_time`` from
``activeDeadlineSeconds``. DMS runs one image per job, so a pod with more than one
container (init containers included) is refused with a reason rather than cut down.
"""

from __future__ import annotations

import math
import shlex
from decimal import Decimal
from typing import Any

from kubernetes.utils import parse_quantity

from interlink_nunet.resources import GpuModel

GENERIC_GPU = {"nvidia.com/gpu": "nvidia", "amd.com/gpu": "amd", "gpu.intel.com/i915": "intel"}
LEGACY_GPU_PREFIX = "nunet.gpu."  # NuNet's first resource names, without a domain
# the cluster's CA, which Kubernetes projects with the service account token into every pod
SERVICE_ACCOUNT_CA = "kube-root-ca.crt"


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
    check_volumes(spec, container, where=f"pod {namespace}/{name}")
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
    # interLink 0.6.2 (pkg/interlink/api/func.go, retrieveData) sends a container only the
    # config maps it mounts as volumes; the virtual kubelet resolves envFrom itself, and
    # env valueFrom only with SkipDownwardAPIResolution, which resolves secretKeyRef too.
    raise PodRejected(
        f"{where}: config map {name!r} was not sent with the pod: interLink sends only the "
        "config maps a container mounts as volumes. Mount config map "
        f"{name!r} as a volume of the container (its keys are then resolved here), or use "
        "envFrom configMapRef, which the virtual kubelet resolves itself. Setting the "
        "virtual kubelet's SkipDownwardAPIResolution would resolve it too, but also turns "
        "secretKeyRef into plain values that reach DMS")


def referenced_config_maps(container: dict) -> set[str]:
    """The config maps the container's environment refers to."""
    names = {(s.get("configMapRef") or {}).get("name") for s in container.get("envFrom") or []}
    names |= {((v.get("valueFrom") or {}).get("configMapKeyRef") or {}).get("name")
              for v in container.get("env") or []}
    return {n for n in names if n}


def check_volumes(spec: dict, container: dict, where: str) -> None:
    """A NuNet job takes no files from the pod: a mounted Secret or config map would be
    silently missing, so it is refused naming the volume. A config map the environment
    refers to may be mounted (interLink sends it only then) and is used for the
    environment; the service account's projected volume (token, ``kube-root-ca.crt``,
    namespace) is left out."""
    volumes = {v.get("name"): v for v in spec.get("volumes") or [] if isinstance(v, dict)}
    env_maps = referenced_config_maps(container)
    for mount in container.get("volumeMounts") or []:
        name = mount.get("name")
        volume = volumes.get(name) or {}
        at = f"volume {name!r} (mounted at {mount.get('mountPath')!r})"
        if volume.get("secret") is not None:
            raise _secret(where, f"volume {name!r} (mounted at {mount.get('mountPath')!r}, "
                          f"Secret {volume['secret'].get('secretName')!r})")
        sources = [volume["configMap"]] if volume.get("configMap") is not None else []
        for source in (volume.get("projected") or {}).get("sources") or []:
            if source.get("secret") is not None:
                raise _secret(where, f"volume {name!r} (mounted at {mount.get('mountPath')!r},"
                              f" projecting Secret {source['secret'].get('name')!r})")
            if source.get("configMap") is not None and \
                    source["configMap"].get("name") != SERVICE_ACCOUNT_CA:
                sources.append(source["configMap"])
        for config_map in sources:
            if config_map.get("name") not in env_maps:
                raise PodRejected(
                    f"{where}: {at} mounts config map {config_map.get('name')!r} as files; a "
                    "NuNet job takes no files from the pod. Refer to its keys from env "
                    "(configMapKeyRef or envFrom) instead, or build them into the image")


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
