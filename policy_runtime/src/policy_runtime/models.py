"""Request and response bodies of the policies API (pydantic v2).

Field names follow the upstream AIOS policies system so that its users can migrate
their documents unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
# No "-" or ":" in version and release tag: the URI "<name>:<version>-<release_tag>"
# must name exactly one (version, release_tag) pair.
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+]{0,63}$"
RELEASE_TAG_PATTERN = r"^([A-Za-z0-9][A-Za-z0-9._+]{0,63})?$"


def policy_rule_uri(name: str, version: str, release_tag: str) -> str:
    """``<name>:<version>-<release_tag>``, or ``<name>:<version>`` without a release tag."""
    return f"{name}:{version}-{release_tag}" if release_tag else f"{name}:{version}"


# Deeper documents are refused: MongoDB stores at most 100 levels and would fail the write
# as a database error; no real policy setting or schema comes near this.
MAX_DOCUMENT_DEPTH = 32


def json_depth(value: Any) -> int:
    """The nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


class PolicyCreate(BaseModel):
    """A policy to publish: its code (or an upstream code archive) and its metadata."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, examples=["aiosv1.policies.gateway.add-node"])
    version: str = Field(pattern=VERSION_PATTERN, examples=["v0.0.12"])
    release_tag: str = Field("", pattern=RELEASE_TAG_PATTERN, examples=["stable"])
    code: str | None = Field(None, description="Python source defining class AIOSv1PolicyRule")
    code_archive: str | None = Field(
        None, description="base64 zip or tar archive holding code/function.py (upstream layout)"
    )
    code_type: str = Field("python", description="language of the code; only python runs")
    type: str = Field("", description="what the policy is for, e.g. precheck, stability_checker")
    description: str = ""
    tags: list[str] = Field(default_factory=list, description="list, or comma-separated string")
    metadata: dict[str, Any] = Field(default_factory=dict)
    policy_settings: dict[str, Any] = Field(default_factory=dict)
    policy_parameters: dict[str, Any] = Field(default_factory=dict)
    policy_input_schema: dict[str, Any] | None = None
    policy_output_schema: dict[str, Any] | None = None
    policy_settings_schema: dict[str, Any] | None = None
    policy_parameters_schema: dict[str, Any] | None = None
    management_commands_schema: list[Any] = Field(default_factory=list)
    policy_rule_uri: str | None = Field(
        None, description="optional; when given it must equal <name>:<version>-<release_tag>"
    )

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, value: object) -> object:
        if isinstance(value, str):
            return [tag.strip() for tag in value.split(",") if tag.strip()]
        return value

    @field_validator(
        "metadata", "policy_settings", "policy_parameters", "policy_input_schema",
        "policy_output_schema", "policy_settings_schema", "policy_parameters_schema",
        "management_commands_schema",
    )
    @classmethod
    def _not_too_deep(cls, value: Any) -> Any:
        if json_depth(value) > MAX_DOCUMENT_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DOCUMENT_DEPTH} levels")
        return value

    @field_validator("code_type")
    @classmethod
    def _python_only(cls, value: str) -> str:
        if value.lower() not in ("python", "python3", "python_class_v1"):
            raise ValueError(f"code_type {value!r} cannot run here; use 'python'")
        return value

    @property
    def uri(self) -> str:
        return policy_rule_uri(self.name, self.version, self.release_tag)


class PublishResult(BaseModel):
    policy_rule_uri: str
    created: bool = Field(description="false when the same code was already published")


class EvalRequest(BaseModel):
    """Input of one decision."""

    model_config = ConfigDict(extra="forbid")

    input_data: Any = None
    parameters: dict[str, Any] = Field(default_factory=dict, description="override defaults")
    settings: dict[str, Any] = Field(
        default_factory=dict, description="override settings, e.g. timeout_seconds, memory_mb"
    )
    context: dict[str, Any] = Field(
        default_factory=dict,
        description="keys laid over the policy's persisted context for this decision",
    )
    cluster_id: str | None = Field(
        None, min_length=1, max_length=128,
        description="the cluster the decision is for: the policy's persisted context is "
        "kept per policy and cluster",
    )


class ExecutePolicyRequest(BaseModel):
    """Upstream's ``POST /execute_policy`` body."""

    policy_rule_uri: str
    input_data: Any = None
    parameters: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    type: str
    message: str


class LogRecord(BaseModel):
    """One record a policy logged through its ``logging`` module."""

    level: str
    logger: str
    message: str


class EvalResponse(BaseModel):
    ok: bool
    result: Any = None
    duration_ms: float | None = None
    error: ErrorBody | None = None
    printed: str | None = Field(None, description="what the policy printed (at most 16 KiB)")
    logs: list[LogRecord] | None = Field(
        None, description="what the policy logged (at most 100 records)"
    )


class PolicyPage(BaseModel):
    """One page of a listing: the total that matched and the items from ``skip``."""

    total: int
    skip: int
    limit: int
    items: list[dict[str, Any]]


class ClusterPage(PolicyPage):
    """A page of ``GET /clusters``: the same shape as ``GET /policies``."""


TOKEN_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"  # noqa: S105


class TokenCreate(BaseModel):
    """``POST /tokens``: a scoped API token (the token itself is in the answer, once)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=TOKEN_NAME_PATTERN, description="unique; recorded on every write")
    role: str = Field(description="admin, operator, cluster-owner, executor or reader")
    clusters: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=1000,
        description="cluster-owner only: the cluster ids it may read and change",
    )
    policy_prefixes: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=100,
        description="cluster-owner only: policy name prefixes it may publish under",
    )
    expires: datetime | None = Field(None, description="ISO 8601; none: never expires")


class ProvisionedToken(TokenCreate):
    """One entry of the tokens file (``AIOS_TOKENS_FILE``): a token made outside the runtime,
    by an installer, known here only by its SHA-256. Role and scope follow the rules of
    ``POST /tokens``."""

    sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the token, 64 lower-case hex digits"
    )

    @field_validator("expires", mode="before")
    @classmethod
    def _no_expiry(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError(
                "a token of the tokens file does not expire: replace it in the file instead"
            )
        return value
