"""The preflight rules against realistic cluster fixtures, cases as data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ansible_collections.aios.platform.plugins.filter.preflight import preflight_problems
from ansible_collections.aios.platform.plugins.module_utils.preflight import quantity_bytes

HERE = Path(__file__).parent
FIXTURES = HERE.parents[1] / "fixtures"
CASES = yaml.safe_load((HERE / "preflight_cases.yml").read_text())
CLAIMED = [{"namespace": "registries", "name": "blocks-db-svc", "node_port": 30100}]


def items(name: str | None) -> list | None:
    return None if name is None else yaml.safe_load((FIXTURES / name).read_text())["items"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_preflight(case: dict) -> None:
    problems = preflight_problems(
        items(case["nodes"]),
        workloads=items(case.get("workloads")),
        services=items(case.get("services")) or [],
        claimed=CLAIMED,
        labels=case.get("labels"),
        requirements=case.get("requirements"),
        listening=case.get("listening"),
        expected_ports=case.get("expected_ports"),
        planned_labels=case.get("planned_labels"),
    )
    assert problems == case["expected"]


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("8029384Ki", 8029384 * 1024), ("40Gi", 40 * 2**30), ("8G", 8e9), ("1500m", 1.5),
     ("123", 123.0), ("", None), ("lots", None)],
)
def test_quantity_bytes(quantity: str, expected: float | None) -> None:
    assert quantity_bytes(quantity) == expected


SS_OUTPUT = """\
LISTEN 0      4096       127.0.0.1:2379       0.0.0.0:*
LISTEN 0      4096      10.0.0.19:2380       0.0.0.0:*
LISTEN 0      4096               *:6443             *:*
LISTEN 0      4096            [::]:10250         [::]:*
LISTEN 0      128          0.0.0.0:22         0.0.0.0:*
LISTEN 0      4096               *:6443             *:*
"""


def test_listening_ports_parses_ss() -> None:
    from ansible_collections.aios.platform.plugins.module_utils.preflight import listening_ports

    assert listening_ports(SS_OUTPUT) == [22, 2379, 2380, 6443, 10250]
    assert listening_ports("") == []
