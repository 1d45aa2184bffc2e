"""scripts/run_local.py (`make run`): what it tells the user when it is done.

`make run` itself is exercised by tests/integration/test_local_run.py; this checks the
closing message on its own: it names the directory that really holds the collection's
tools, and how to put it on PATH.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _load_script():
    spec = importlib.util.spec_from_file_location("run_local", REPO / "scripts" / "run_local.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


run_local = _load_script()
URL = "http://127.0.0.1:8080"


def _tools(message: str) -> tuple[str, str]:
    """(the directory the message says holds the tools, the PATH entry it suggests)."""
    named = re.search(r"tools: aios-policy \(eval, check, test\) and ansible-playbook are in "
                      r"(\S+)/;", message)
    exported = re.search(r'export PATH="([^"]+):\$PATH"', message)
    assert named and exported, message
    return named.group(1), exported.group(1)


def test_the_closing_message_says_where_the_tools_are(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent  # where `make run` runs from: the tools' venv
    message = run_local.closing_message(URL, tmp_path / "api-token", bin_dir)
    named, exported = _tools(message)
    directory = Path(named) if Path(named).is_absolute() else REPO / named
    assert directory.resolve() == bin_dir.resolve()
    for tool in ("aios-policy", "ansible-playbook"):
        assert (directory / tool).is_file(), f"{tool} is not in {directory}"
    assert exported.replace("$PWD", str(REPO)).rstrip("/") == str(directory).rstrip("/")
    assert "`make shell`" in message and "ANSIBLE_COLLECTIONS_PATH=$PWD/build/collections" in (
        message)
    assert f"The runtime keeps running at {URL} (API docs: {URL}/docs)." in message
    assert f"$(cat {tmp_path / 'api-token'})" in message and "make stop" in message


def test_tools_inside_the_checkout_are_named_relative_to_it(tmp_path: Path) -> None:
    message = run_local.closing_message(URL, tmp_path / "t", REPO / ".venv" / "bin")
    assert _tools(message) == (".venv/bin", "$PWD/.venv/bin")


def test_tools_outside_the_checkout_are_named_by_their_absolute_path(tmp_path: Path) -> None:
    outside = tmp_path / "venv" / "bin"
    message = run_local.closing_message(URL, tmp_path / "t", outside)
    assert _tools(message) == (str(outside), str(outside))
