"""Settings from the environment: parsing, token resolution, limit caps."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from policy_runtime.config import ConfigError, RunMode, Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("AIOS_"):
            monkeypatch.delenv(name)


def test_defaults_are_safe() -> None:
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.run_modes == [RunMode.POLICIES]
    assert settings.max_body_bytes == 1024 * 1024 and settings.max_code_bytes == 256 * 1024
    with pytest.raises(ConfigError, match="AIOS_API_TOKEN"):
        settings.resolve_token()


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOS_RUN_MODES", " policies , ")
    monkeypatch.setenv("AIOS_API_TOKEN", "abc")
    monkeypatch.setenv("AIOS_POOL_SIZE", "3")
    settings = Settings()
    assert settings.run_modes == [RunMode.POLICIES]
    assert settings.pool_size == 3
    assert settings.resolve_token() == "abc"
    assert "abc" not in repr(settings), "the token must not appear in logs or reprs"


@pytest.mark.parametrize(("variable", "field", "value", "expected"), [
    ("AIOS_RUN_MODES", "run_modes", "policies, clusters,,", [RunMode.POLICIES, RunMode.CLUSTERS]),
    ("AIOS_EXECUTOR_ALLOWED_HOSTS", "executor_allowed_hosts", " a.example , 10.0.0.0/8,",
     ["a.example", "10.0.0.0/8"]),
    ("AIOS_POLICY_ARCHIVE_ALLOWED_HOSTS", "policy_archive_allowed_hosts", "assets,  ,127.0.0.1",
     ["assets", "127.0.0.1"]),
    ("AIOS_LOCAL_EXECUTOR_IDS", "local_executor_ids", "executor-001, executor-002 ",
     ["executor-001", "executor-002"]),
])
def test_comma_lists_are_read_without_blanks(
    monkeypatch: pytest.MonkeyPatch, variable: str, field: str, value: str, expected: list
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(Settings(), field) == expected


def test_unknown_run_mode_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOS_RUN_MODES", "policies,bogus")
    with pytest.raises(ValidationError, match="run_modes"):
        Settings()


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("  from-file \n")
    assert Settings(api_token_file=path).resolve_token() == "from-file"
    path.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        Settings(api_token_file=path).resolve_token()


def test_insecure_mode_has_no_token() -> None:
    assert Settings(insecure_no_auth=True).resolve_token() is None


def test_defaults_never_exceed_caps() -> None:
    limits = Settings(default_timeout_seconds=60, max_timeout_seconds=5,
                      default_memory_mb=4096, max_memory_mb=512).limits
    assert limits.default_timeout_seconds == 5 and limits.default_memory_mb == 512


def test_every_setting_is_documented() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [
        f"AIOS_{name.upper()}" for name in Settings.model_fields
        if f"`AIOS_{name.upper()}`" not in readme
    ]
    assert not missing, f"document these settings in policy_runtime/README.md: {missing}"


def test_scoped_tokens_only_refuses_a_bootstrap_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOS_SCOPED_TOKENS_ONLY", "true")
    monkeypatch.setenv("AIOS_API_TOKEN", "an-admin-token")
    with pytest.raises(ConfigError, match="AIOS_SCOPED_TOKENS_ONLY=true takes no AIOS_API_TOKEN"):
        Settings().resolve_token()


def test_scoped_tokens_only_starts_with_a_bootstrap_token_nobody_knows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIOS_SCOPED_TOKENS_ONLY", "true")
    settings = Settings()
    first, second = settings.resolve_token(), settings.resolve_token()
    assert first and second and first != second, "a fresh unguessable token on each start"
    assert len(first) >= 40
