"""The modules' copy of the cluster model: in sync with the runtime's, and working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.aios.platform.plugins.module_utils import cluster_document

REPO = Path(__file__).resolve().parents[4]
SEED = json.loads((REPO / "policies" / "clusters" / "cluster-west-vision-001.json").read_text())


def test_copy_is_in_sync_with_the_runtime_model() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "sync_cluster_model.py"), "--check"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr


def test_the_seed_example_validates() -> None:
    assert cluster_document.HAS_PYDANTIC
    model = cluster_document.ClusterDocument.model_validate(SEED)
    assert model.id == "cluster-west-vision-001" and model.config.useGateway is True


def test_a_bad_document_names_the_field() -> None:
    from pydantic import ValidationError

    broken = {**SEED, "nodes": {"count": "two", "nodeData": []}}
    with pytest.raises(ValidationError) as info:
        cluster_document.ClusterDocument.model_validate(broken)
    assert ("nodes", "count") in [tuple(e["loc"]) for e in info.value.errors()]
