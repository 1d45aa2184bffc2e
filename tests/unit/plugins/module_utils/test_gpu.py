"""nvidia-smi parsing and the GPU host prerequisites, cases as data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.aios.platform.plugins.module_utils import gpu

CASES = yaml.safe_load((Path(__file__).parent / "nvidia_smi_cases.yml").read_text())


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_nvidia_smi(case: dict) -> None:
    if "error" in case:
        with pytest.raises(gpu.NvidiaSmiError, match=case["error"].replace("(", r"\(")):
            gpu.parse_gpus(case["output"])
        return
    block = gpu.gpus_block(gpu.parse_gpus(case["output"]))
    expected = case["gpus"]
    assert {k: block[k] for k in expected} == expected


def test_annotation_is_upstreams_compact_list() -> None:
    gpus = gpu.parse_gpus("Tesla T4, 15360, 535.129.03, 7.5, [N/A]\n")
    assert gpu.annotation(gpus) == '[{"modelName":"Tesla T4","memory":15360}]'


def test_prerequisites() -> None:
    old = gpu.parse_gpus("Tesla K80, 11441, 418.87.01, 3.7, [N/A]\n")
    assert gpu.driver_problems(old) == ["NVIDIA driver 418.87.01 is older than 450"]
    assert gpu.cuda_version("| NVIDIA-SMI 550.54.15  Driver Version: 550.54.15  "
                            "CUDA Version: 12.4     |") == "12.4"
    assert gpu.version_at_least("20.10.7", "19.03") and not gpu.version_at_least("18.09", "19.03")
