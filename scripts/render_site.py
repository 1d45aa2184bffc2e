"""Render playbooks/site.yml (or another) into a directory (render mode: no cluster).

``python scripts/render_site.py DIR [-p addons.yml] [-e KEY=VALUE ...]`` from the checkout;
the tests and ``bench/render.py`` use its functions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
COLLECTIONS = REPO / "build" / "collections"


def link_collection() -> None:
    """Make the checkout importable as aios.platform (what `make collection-link` does)."""
    link = COLLECTIONS / "ansible_collections" / "aios" / "platform"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO, target_is_directory=True)


def run_playbook(name: str, variables: dict, *args: str, inventory: str = "localhost,",
                 env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """ansible-playbook playbooks/<name> of the checkout with this Python as interpreter."""
    link_collection()
    bin_dir = Path(sys.executable).parent
    environment = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",  # the venv's helm
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
        "ANSIBLE_NOCOLOR": "1",
        **(env or {}),
    }
    return subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", inventory, str(REPO / "playbooks" / name),
         "-e", json.dumps({"ansible_python_interpreter": sys.executable, **variables}), *args],
        capture_output=True, text=True, env=environment, timeout=timeout, check=False,
    )


def render_site(directory: Path, extra_vars: dict | None = None,
                playbook: str = "site.yml") -> subprocess.CompletedProcess:
    variables = {"aios_render_dir": str(directory), "ansible_connection": "local",
                 **(extra_vars or {})}
    return run_playbook(playbook, variables, timeout=600)


def manifests(directory: Path) -> dict[Path, dict]:
    return {p: yaml.safe_load(p.read_text()) for p in sorted(directory.rglob("*.yaml"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("-p", dest="playbook", default="site.yml",
                        help="the playbook of playbooks/ to render (default site.yml)")
    parser.add_argument("-e", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra variable, value parsed as YAML")
    args = parser.parse_args()
    extra = {}
    for item in args.extra:
        key, _, value = item.partition("=")
        extra[key] = yaml.safe_load(value)
    done = render_site(args.directory.resolve(), extra, args.playbook)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
