"""One license, Apache-2.0, declared alike everywhere and carried by every built artefact."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = ("policy_runtime", "interlink_nunet")
ANSIBLE_GALAXY = Path(sys.executable).with_name("ansible-galaxy")


def tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    return [REPO / name for name in listed if name and (REPO / name).is_file()]


def test_the_license_file_is_apache_2_and_every_distribution_ships_the_same() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    for distribution in DISTRIBUTIONS:
        assert (REPO / distribution / "LICENSE").read_text() == text, distribution


def test_every_declaration_says_apache_2() -> None:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert galaxy["license"] == ["Apache-2.0"] and "license_file" not in galaxy
    for distribution in DISTRIBUTIONS:
        project = tomllib.loads((REPO / distribution / "pyproject.toml").read_text())["project"]
        assert project["license"] == "Apache-2.0", distribution
        assert project["license-files"] == ["LICENSE"], distribution


def test_no_source_file_claims_another_license() -> None:
    """Headers name Apache-2.0; no file carries a GPL header (the README only names
    SecantusDB's license, which is not part of this tree)."""
    offending = []
    for path in tracked_files():
        if path.suffix not in {".py", ".yml", ".yaml", ".j2", ".sh", ".toml", ".cfg"}:
            continue
        head = "\n".join(path.read_text(errors="replace").splitlines()[:5])
        if "General Public License" in head or "gpl-3.0" in head.lower():
            offending.append(str(path.relative_to(REPO)))
        if "License" in head and "Apache License 2.0" not in head and "license" not in path.name:
            offending.append(str(path.relative_to(REPO)))
    assert offending == []


def test_the_collection_build_carries_the_license(tmp_path: Path) -> None:
    subprocess.run([str(ANSIBLE_GALAXY), "collection", "build", "--output-path", str(tmp_path),
                    str(REPO)], check=True, capture_output=True)
    (built,) = tmp_path.glob("aios-platform-*.tar.gz")
    with tarfile.open(built) as archive:
        assert archive.extractfile("LICENSE").read().decode() == (REPO / "LICENSE").read_text()
        manifest = json.load(archive.extractfile("MANIFEST.json"))
    assert manifest["collection_info"]["license"] == ["Apache-2.0"]


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_each_wheel_carries_the_license(tmp_path: Path, distribution: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w",
                    str(tmp_path), str(REPO / distribution)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        license_file = next(n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert archive.read(license_file).decode() == (REPO / "LICENSE").read_text()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
    assert "License-Expression: Apache-2.0" in metadata.decode()
