"""manifest_files: file names, deterministic content, idempotence and check mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible_collections.aios.platform.plugins.modules import manifest_files

MODULE = Path(manifest_files.__file__)
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "b", "namespace": "x"},
           "spec": {"ports": [{"port": 1}]}}


def run_module(args: dict, check_mode: bool = False) -> dict:
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}
    done = subprocess.run(
        [sys.executable, str(MODULE)], input=json.dumps(payload), capture_output=True, text=True,
        check=False,
    )
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [(SERVICE, "service-b.yaml"),
     ({"kind": "StatefulSet", "metadata": {"name": "registry"}}, "statefulset-registry.yaml")],
)
def test_file_name(manifest: dict, expected: str) -> None:
    assert manifest_files.file_name(manifest) == expected


@pytest.mark.parametrize("manifest", [{"kind": "Service"}, {"metadata": {"name": "x"}}, {}])
def test_file_name_needs_kind_and_name(manifest: dict) -> None:
    with pytest.raises(ValueError, match=r"needs kind and metadata\.name"):
        manifest_files.file_name(manifest)


def test_content_is_sorted_and_round_trips() -> None:
    text = manifest_files.render({"kind": "A", "apiVersion": "v1", "metadata": {"name": "a"}})
    assert text.splitlines()[0] == "apiVersion: v1"
    assert yaml.safe_load(text) == {"kind": "A", "apiVersion": "v1", "metadata": {"name": "a"}}


def test_writes_then_changes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    preview = run_module({"dest": str(dest), "manifests": [SERVICE]}, check_mode=True)
    assert preview["changed"] is True and not dest.exists()
    first = run_module({"dest": str(dest), "manifests": [SERVICE]})
    assert first["changed"] is True and first["written"] == [str(dest / "service-b.yaml")]
    assert yaml.safe_load((dest / "service-b.yaml").read_text()) == SERVICE
    assert oct((dest / "service-b.yaml").stat().st_mode & 0o777) == "0o644"
    second = run_module({"dest": str(dest), "manifests": [SERVICE]})
    assert second["changed"] is False and second["written"] == []


def test_refuses_two_manifests_for_one_file(tmp_path: Path) -> None:
    result = run_module({"dest": str(tmp_path), "manifests": [SERVICE, SERVICE]})
    assert result["failed"] is True and "two manifests map to service-b.yaml" in result["msg"]


def test_validation_lists_every_problem_and_writes_nothing(tmp_path: Path) -> None:
    typo = {**SERVICE, "metadata": {"name": "typo", "namespace": "x"},
            "spec": {"ports": [{"port": 1, "targetport": 2}]}}
    wrong_type = {**SERVICE, "metadata": {"name": "bad", "namespace": "x"},
                  "spec": {"ports": [{"port": "eighty"}]}}
    result = run_module({"dest": str(tmp_path), "manifests": [SERVICE, typo, wrong_type],
                         "validate": ["1.29.0"]})
    assert result["failed"] is True and list(tmp_path.iterdir()) == []
    assert len(result["problems"]) == 2
    assert "service-typo.yaml (Kubernetes 1.29.0)" in result["problems"][0]
    assert "targetport" in result["problems"][0]
    assert "service-bad.yaml (Kubernetes 1.29.0): spec.ports.0.port" in result["problems"][1]


def test_valid_manifests_are_written_after_validation(tmp_path: Path) -> None:
    result = run_module({"dest": str(tmp_path), "manifests": [SERVICE],
                         "validate": ["1.29.0", "1.33.0"]})
    assert result["changed"] is True and (tmp_path / "service-b.yaml").exists()


def test_secrets_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "t", "namespace": "x"},
              "stringData": {"token": "s3cret"}}
    path = tmp_path / "secret-t.yaml"
    first = run_module({"dest": str(tmp_path), "manifests": [secret, SERVICE]})
    assert first["changed"] is True
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "service-b.yaml").stat().st_mode & 0o777 == 0o644
    path.chmod(0o644)  # a copy made readable is made private again, content unchanged
    again = run_module({"dest": str(tmp_path), "manifests": [secret, SERVICE]})
    assert again["changed"] is True and again["written"] == [str(path)]
    assert path.stat().st_mode & 0o777 == 0o600
