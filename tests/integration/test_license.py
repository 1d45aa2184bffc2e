"""One license, GPL-3.0-or-later, declared alike everywhere and carried by every built
artefact."""

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


def test_the_license_file_is_gpl_3_and_every_distribution_ships_the_same() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    for distribution in DISTRIBUTIONS:
        assert (REPO / distribution / "LICENSE").read_text() == text, distribution


def test_every_declaration_says_gpl_3_or_later() -> None:
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text())
    assert galaxy["license"] == ["GPL-3.0-or-later"] and "license_file" not in galaxy
    for distribution in DISTRIBUTIONS:
        project = tomllib.loads((REPO / distribution / "pyproject.toml").read_text())["project"]
        assert project["license"] == "GPL-3.0-or-later", distribution
        assert project["license-files"] == ["LICENSE"], distribution


def test_no_source_file_claims_another_license() -> None:
    """Headers that name a license name GPL v3.0+; every module and plugin has one, the
    form `ansible-test sanity` looks for (the README only names third parties' licenses)."""
    offending = []
    for path in tracked_files():
        if path.suffix not in {".py", ".yml", ".yaml", ".j2", ".sh", ".toml", ".cfg"}:
            continue
        head = "\n".join(path.read_text(errors="replace").splitlines()[:5])
        names_one = "License" in head and "license" not in path.name
        if names_one and "GNU General Public License v3.0+" not in head:
            offending.append(str(path.relative_to(REPO)))
        if path.relative_to(REPO).parts[0] == "plugins" and path.suffix == ".py" and (
                path.name != "__init__.py" and "GNU General Public License v3.0+" not in head):
            offending.append(str(path.relative_to(REPO)))
    assert offending == []


def test_the_collection_build_carries_the_license(tmp_path: Path) -> None:
    subprocess.run([str(ANSIBLE_GALAXY), "collection", "build", "--output-path", str(tmp_path),
                    str(REPO)], check=True, capture_output=True)
    (built,) = tmp_path.glob("aios-platform-*.tar.gz")
    with tarfile.open(built) as archive:
        assert archive.extractfile("LICENSE").read().decode() == (REPO / "LICENSE").read_text()
        manifest = json.load(archive.extractfile("MANIFEST.json"))
    assert manifest["collection_info"]["license"] == ["GPL-3.0-or-later"]


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
    assert "License-Expression: GPL-3.0-or-later" in metadata.decode()
