"""Service configuration, read from the environment (prefix ``AIOS_``) by pydantic-settings."""

from __future__ import annotations

import os
import re
import secrets
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from policy_runtime.auth.tokens import load_tokens_file
from policy_runtime.evaluation import LimitsConfig

# The ids an executor may be registered under (api/routes/executors.py).
EXECUTOR_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class RunMode(StrEnum):
    """Which routers a process serves (like the run modes of an appliance install)."""

    POLICIES = "policies"
    CLUSTERS = "clusters"
    CONTROLLER = "controller"


class ConfigError(Exception):
    """The configuration cannot work; the message names the setting and the fix."""


class Settings(BaseSettings):
    """Every option of the runtime. Each field is the env var ``AIOS_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="AIOS_", extra="ignore", populate_by_name=True)

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 in containers)")
    port: int = Field(8080, ge=0, le=65535, description="port to listen on")
    mongo_uri: str = Field(
        "mongodb://127.0.0.1:27017/?directConnection=true", description="MongoDB connection URI"
    )
    db_name: str = Field("aios", description="database holding the runtime's collections")
    # Writes always wait for the journal of a majority (w: majority, j: true); no setting
    # or URI option weakens that (store/database.py).
    db_timeout_seconds: float = Field(
        10.0, gt=0, le=300,
        description="time limit of any database operation, sent to the server as maxTimeMS",
    )
    query_timeout_seconds: float = Field(
        5.0, gt=0, le=300,
        description="server-side time limit (maxTimeMS) of a client's cluster query; "
        "a query that runs longer answers 504",
    )
    cluster_id: str = Field(
        "", max_length=128, description="the controller's own cluster (default for cluster_id)"
    )
    # Remote execution; the upstream deployment's variable names are accepted too.
    policy_execution_mode: Literal["local", "remote"] = Field(
        "local",
        validation_alias=AliasChoices("AIOS_POLICY_EXECUTION_MODE", "POLICY_EXECUTION_MODE"),
        description="where the controller runs pre-check policies: local, or remote",
    )
    policy_system_executor_id: str = Field(
        "",
        validation_alias=AliasChoices(
            "AIOS_POLICY_SYSTEM_EXECUTOR_ID", "POLICY_SYSTEM_EXECUTOR_ID"
        ),
        description="the executor a remote controller uses unless its cluster names one",
    )
    policies_url: str = Field(
        "", description="the policies system a remote controller calls, e.g. http://policies-system:10000"
    )
    remote_token: SecretStr | None = Field(
        None, description="token for the policies system and executors (default: AIOS_API_TOKEN)"
    )
    remote_timeout_seconds: float = Field(10.0, gt=0, description="time limit of a remote call")
    nodes_source: Literal["push", "kubernetes"] = Field(
        "push", description="node data of the stability checker: pushed, or read from Kubernetes"
    )
    run_modes: Annotated[list[RunMode], NoDecode] = Field(
        default_factory=lambda: [RunMode.POLICIES],
        description="comma list of run modes to serve: policies, clusters, controller",
    )
    api_token: SecretStr | None = Field(None, description="bearer token every client must send")
    api_token_file: Path | None = Field(
        None, description="file holding the token (e.g. a mounted Kubernetes Secret)"
    )
    insecure_no_auth: bool = Field(False, description="serve without a token (local use only)")
    scoped_tokens_only: bool = Field(
        False,
        description="accept only the scoped tokens of the token store: no bootstrap (admin) "
        "token is configured or accepted (a cluster's controller, which holds no admin token)",
    )
    tokens_file: Path | None = Field(
        None,
        description="JSON file (e.g. a mounted Kubernetes Secret) of tokens made outside the "
        "runtime, each by its SHA-256: [{name, sha256, role, clusters, policy_prefixes}]. "
        "They are accepted like stored tokens of that role and scope, are never stored, and "
        "change only with the file and a restart; a bad file stops the start",
    )
    pool_size: int = Field(
        default_factory=lambda: os.cpu_count() or 1, ge=1, description="sandbox worker processes"
    )
    default_timeout_seconds: float = Field(2.0, gt=0, description="policy time limit default")
    max_timeout_seconds: float = Field(30.0, gt=0, description="cap on any policy time limit")
    default_memory_mb: int = Field(256, gt=0, description="policy memory limit default (MiB)")
    max_memory_mb: int = Field(1024, gt=0, description="cap on any policy memory limit (MiB)")
    queue_timeout_seconds: float = Field(
        10.0, gt=0, description="how long a call waits for a free worker before 503"
    )
    max_body_bytes: int = Field(1024 * 1024, gt=0, description="largest request body accepted")
    max_code_bytes: int = Field(256 * 1024, gt=0, description="largest policy source accepted")
    policy_cache_seconds: float = Field(
        5.0, ge=0, description="how long a replica caches a policy (deletes elsewhere show after)"
    )
    decision_log_max_entries: int = Field(
        100_000, ge=1, description="decisions kept in the log (the oldest are trimmed)"
    )
    policy_context_max_bytes: int = Field(
        64 * 1024, ge=2, le=8 * 1024 * 1024,
        description="largest persisted policy context (its JSON, in bytes); a decision "
        "that leaves a larger context fails and stores nothing",
    )
    metrics_max_clusters: int = Field(
        20, ge=0, le=1000,
        description="clusters that get a cluster_id label of their own in /metrics (the first "
        "ones reported on); the others are counted together under cluster_id=\"other\"",
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    access_log: bool = Field(True, description="log every HTTP request")
    git_commit: str = Field("", description="reported by /version (set at image build)")
    build_date: str = Field("", description="reported by /version (set at image build)")
    # Hostile requests (issue 28): bounds on schema validation and on HTTP connections.
    schema_timeout_seconds: float = Field(
        2.0, gt=0, le=60,
        description="time limit of one JSON Schema validation (input, parameters, settings, "
        "result); beyond it the decision fails with InvalidInput",
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, le=16 * 1024 * 1024,
        description="largest request head (request line and headers); 431 beyond",
    )
    max_headers: int = Field(
        100, ge=10, le=10_000, description="most header fields in one request; 431 beyond"
    )
    request_read_timeout_seconds: float = Field(
        10.0, gt=0, le=3600,
        description="time a client has to send a whole request (head and body) once it "
        "started one, and to start its first; the connection is closed after it",
    )
    # Scoped tokens (issue 26).
    token_cache_seconds: float = Field(
        1.0, ge=0, le=1,
        description="how long a replica caches a token lookup; a revocation or expiry "
        "takes effect on every replica within it (at most 1 s)",
    )
    executor_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma list of host names and IP networks (CIDR) executor URLs may "
        "point at; empty: no executor can be registered. Link-local and cloud metadata "
        "addresses are refused whatever this says",
    )
    local_executor_ids: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma list of executor ids this policies system answers itself: a "
        "decision posted to /executor/{id}/execute_policy for one of them is evaluated "
        "here, as POST /execute_policy is (upstream's services post to executor-001). "
        "These ids cannot be registered as executors",
    )

    # Upstream policy records whose code is the URL of an archive (issue 18).
    policy_archive_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma list of host names and IP networks (CIDR) an upstream policy's "
        "code URL may point at (the assets registry); the archive is fetched once, when "
        "the policy is published. Empty: code URLs are refused. Link-local and cloud "
        "metadata addresses are refused whatever this says",
    )
    policy_archive_max_bytes: int = Field(
        4 * 1024 * 1024, gt=0, le=256 * 1024 * 1024,
        description="largest code archive fetched from a code URL (bytes, as sent)",
    )
    policy_archive_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="time limit of fetching one code archive",
    )
    # An executor with a database of its own reads the network's policies (issue 22).
    policy_source_url: str = Field(
        "", max_length=2000,
        description="the network's policies system, e.g. http://policies-system:10000: a "
        "policy not stored here is read from it by its URI (GET /policies/{uri}), checked "
        "against its code_sha256 and kept. Empty: off",
    )
    policy_source_token_file: Path | None = Field(
        None,
        description="file holding a token with policies:read on AIOS_POLICY_SOURCE_URL "
        "(e.g. a mounted Kubernetes Secret); required with it",
    )

    @model_validator(mode="after")
    def _check_policy_source(self) -> Settings:
        url = self.policy_source_url.strip()
        if not url:
            return self
        if not url.startswith(("http://", "https://")):
            raise ValueError(
                f"AIOS_POLICY_SOURCE_URL={url!r} is not an http(s) URL; give the policies "
                "system's base URL, e.g. http://policies-system:10000"
            )
        if self.policy_source_token_file is None:
            raise ValueError(
                "AIOS_POLICY_SOURCE_URL is set but AIOS_POLICY_SOURCE_TOKEN_FILE is not: give "
                "the file of a token with policies:read on the policy source"
            )
        try:
            token = self.policy_source_token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"AIOS_POLICY_SOURCE_TOKEN_FILE={self.policy_source_token_file} cannot be "
                f"read: {exc.strerror}"
            ) from None
        if not token:
            raise ValueError(
                f"AIOS_POLICY_SOURCE_TOKEN_FILE={self.policy_source_token_file} is empty"
            )
        return self

    # Lists come from the environment as comma lists ("a, b"); empty items are dropped.
    @field_validator("policy_archive_allowed_hosts", "executor_allowed_hosts",
                     "local_executor_ids", "run_modes", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("local_executor_ids")
    @classmethod
    def _check_executor_ids(cls, value: list[str]) -> list[str]:
        for executor_id in value:
            if not EXECUTOR_ID.fullmatch(executor_id):
                raise ValueError(
                    f"executor id {executor_id!r} is not an executor id: letters, digits, "
                    "'.', '_' and '-', starting with a letter or digit, at most 128 characters"
                )
        return value

    @property
    def limits(self) -> LimitsConfig:
        return LimitsConfig(
            default_timeout_seconds=min(self.default_timeout_seconds, self.max_timeout_seconds),
            max_timeout_seconds=self.max_timeout_seconds,
            default_memory_mb=min(self.default_memory_mb, self.max_memory_mb),
            max_memory_mb=self.max_memory_mb,
            schema_timeout_seconds=self.schema_timeout_seconds,
        )

    def provisioned_tokens(self) -> list[dict]:
        """The token records of AIOS_TOKENS_FILE (none without it); ConfigError naming each
        entry (by index) and field that is wrong."""
        if self.tokens_file is None:
            return []
        try:
            return load_tokens_file(self.tokens_file)
        except ValueError as exc:
            raise ConfigError(f"AIOS_TOKENS_FILE={self.tokens_file} {exc}") from None

    def resolve_token(self) -> str | None:
        """The API token, or None when running without auth; ConfigError if neither is set."""
        if self.scoped_tokens_only:
            if self.api_token is not None or self.api_token_file is not None:
                raise ConfigError(
                    "AIOS_SCOPED_TOKENS_ONLY=true takes no AIOS_API_TOKEN or AIOS_API_TOKEN_FILE: "
                    "leave both unset"
                )
            # A bootstrap token nobody knows (made afresh on each call, never stored or
            # sent): every request is checked against the token store.
            return secrets.token_urlsafe(32)
        if self.api_token is not None and self.api_token.get_secret_value():
            return self.api_token.get_secret_value()
        if self.api_token_file is not None:
            try:
                token = self.api_token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(
                    f"AIOS_API_TOKEN_FILE={self.api_token_file} cannot be read: {exc.strerror}"
                ) from None
            if not token:
                raise ConfigError(f"AIOS_API_TOKEN_FILE={self.api_token_file} is empty")
            return token
        if self.insecure_no_auth:
            return None
        raise ConfigError(
            "no API token configured: set AIOS_API_TOKEN or AIOS_API_TOKEN_FILE "
            "(or pass --insecure-no-auth for local experiments only)"
        )
