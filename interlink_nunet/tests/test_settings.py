"""Every setting is documented in the README."""

from __future__ import annotations

from pathlib import Path

from interlink_nunet.config import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_readme() -> None:
    missing = [name for name in Settings.model_fields
               if f"`NUNET_PLUGIN_{name.upper()}`" not in README]
    assert missing == []
