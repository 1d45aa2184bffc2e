"""Kubernetes names of NuNet resources: GPU models as extended resource names.

``NVIDIA GeForce RTX 3080`` with 10240 MiB of VRAM is ``gpu.nvidia.rtx.3080.10gb`` and
``Tesla P100-PCIE-16GB`` with 16384 MiB is ``gpu.nvidia.tesla.p100.16gb``. The node
advertises them under a domain, ``<prefix>/<name>`` (``nunet.io/gpu.nvidia.rtx.3080.10gb``):
Kubernetes rejects extended resource names without one.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

# Words that name the vendor (and are dropped from the model name) ...
VENDOR_WORDS = {
    "nvidia": "nvidia", "geforce": "nvidia", "amd": "amd", "ati": "amd", "radeon": "amd",
    "intel": "intel",
}
# ... words that imply it but stay in the model name ...
VENDOR_HINTS = {
    "tesla": "nvidia", "quadro": "nvidia", "titan": "nvidia", "rtx": "nvidia", "gtx": "nvidia",
    "instinct": "amd", "arc": "intel",
}
# ... and words that say nothing about the model: the bus, the form factor, the memory.
NOISE = re.compile(r"^(pcie|pci|e|sxm\d*|nvl|hbm\d*e?|\d+gb|\d+g|gpu|graphics|corporation)$")

NAME_PART = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_NAME_PART = 63


def vram_gb(vram_mib: float | None) -> int:
    """VRAM in whole GiB as the cards are sold (10240 MiB -> 10, 7982 MiB -> 8); 0 if unknown."""
    if not vram_mib or vram_mib <= 0:
        return 0
    return max(1, round(vram_mib / 1024))


@lru_cache(maxsize=4096)  # a network has few GPU models and many cards
def gpu_resource_name(model: str, vram_mib: float | None) -> str:
    """``gpu.<vendor>.<model tokens>[.<n>gb]``: valid as the name part of a resource name.

    An unknown vendor is ``other``, an empty model ``unknown``; without VRAM the size is left
    out rather than guessed.
    """
    tokens = [t for t in re.split(r"[^a-z0-9]+", model.lower()) if t]
    vendor = next((VENDOR_WORDS[t] for t in tokens if t in VENDOR_WORDS), None)
    vendor = vendor or next((VENDOR_HINTS[t] for t in tokens if t in VENDOR_HINTS), "other")
    kept = [t for t in tokens if t not in VENDOR_WORDS and not NOISE.match(t)]
    parts = ["gpu", vendor, *(kept or ["unknown"])]
    size = vram_gb(vram_mib)
    if size:
        parts.append(f"{size}gb")
    name = ".".join(parts)
    if len(name) > MAX_NAME_PART:  # keep it unique, within the limit
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_NAME_PART - 9].rstrip('.')}.{digest}"
    return name


def check_prefix(prefix: str) -> str:
    """The domain of the advertised names: a DNS subdomain outside Kubernetes' own."""
    labels = prefix.split(".")
    if len(prefix) > 253 or not all(DNS_LABEL.match(label) for label in labels):
        raise ValueError(f"{prefix!r} is not a DNS subdomain (lower case, e.g. nunet.io)")
    if prefix in ("kubernetes.io", "k8s.io") or prefix.endswith((".kubernetes.io", ".k8s.io")):
        raise ValueError(f"{prefix!r} is reserved for Kubernetes; use your own domain")
    return prefix


def extended_resource_name(prefix: str, name: str) -> str:
    """``<prefix>/<name>``, checked against Kubernetes' qualified-name rules."""
    check_prefix(prefix)
    if len(name) > MAX_NAME_PART or not NAME_PART.match(name):
        raise ValueError(
            f"{name!r} is not a valid resource name: at most 63 letters, digits, '-', '_' or "
            "'.', starting and ending with a letter or digit"
        )
    return f"{prefix}/{name}"
