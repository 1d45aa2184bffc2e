"""Policies on disk: a ``.py`` file, or a directory with ``policy.py`` and ``policy.json``.

The directory layout is what ``policies/examples/*`` use and what ``aios-policy test``
expects: ``policy.py`` (the code), ``policy.json`` (name, version, release_tag,
settings, parameters, schemas ... as published) and ``cases/*.json``. Upstream's
``code/function.py`` layout is accepted in place of ``policy.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SOURCE_NAMES = ("policy.py", "code/function.py")
METADATA_NAME = "policy.json"


class PolicyFileError(Exception):
    """A policy file or directory cannot be read; the message says which and why."""


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyFileError(f"cannot read {what} {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise PolicyFileError(f"{what} {path} is not valid JSON: {exc}") from None


def load_policy_path(path: Path) -> dict:
    """A policy document (``code`` plus metadata) from a file or policy directory."""
    if path.is_dir():
        metadata_path = path / METADATA_NAME
        document = read_json(metadata_path, "metadata file") if metadata_path.exists() else {}
        if not isinstance(document, dict):
            raise PolicyFileError(f"metadata file {metadata_path} must hold a JSON object")
        source_path = next((path / n for n in SOURCE_NAMES if (path / n).is_file()), None)
        if source_path is None:
            names = " or ".join(SOURCE_NAMES)
            raise PolicyFileError(f"policy directory {path} has no {names}")
    else:
        document, source_path = {}, path
    try:
        document["code"] = source_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyFileError(f"cannot read policy file {source_path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PolicyFileError(f"policy file {source_path} is not UTF-8 text") from None
    return document


def case_files(directory: Path) -> list[Path]:
    """The test cases of a policy directory, in name order."""
    return sorted((directory / "cases").glob("*.json"))
