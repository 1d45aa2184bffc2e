"""Make the checkout importable as ansible_collections.aios.platform for unit tests."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "build" / "collections"
_link = COLLECTIONS / "ansible_collections" / "aios" / "platform"
if not _link.exists():
    _link.parent.mkdir(parents=True, exist_ok=True)
    _link.symlink_to(REPO, target_is_directory=True)
sys.path.insert(0, str(COLLECTIONS))
