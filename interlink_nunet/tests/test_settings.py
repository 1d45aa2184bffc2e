"""Every setting of the plugin and of the forwarder is documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from interlink_nunet.config import Settings
from interlink_nunet.forward import ForwarderSettings

README = (Path(__file__).parents[1] / "README.md").read_text()


@pytest.mark.parametrize("settings", [Settings, ForwarderSettings])
def test_every_setting_is_in_the_readme(settings: type[BaseSettings]) -> None:
    prefix = settings.model_config["env_prefix"]
    missing = [name for name in settings.model_fields if f"`{prefix}{name.upper()}`" not in README]
    assert missing == []
