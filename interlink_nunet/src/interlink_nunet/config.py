"""Settings, from environment variables prefixed ``NUNET_PLUGIN_`` (see README)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from interlink_nunet.names import check_prefix


class NodeTaint(BaseModel):
    """A taint as interLink's ping answer carries it (``TaintResponse``)."""

    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1)
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NUNET_PLUGIN_", extra="ignore")

    host: str = Field("127.0.0.1", description="address of the TCP listener")
    port: int = Field(4000, ge=0, le=65535, description="port of the TCP listener")
    socket: Path | None = Field(
        None, description="also serve on this Unix socket, for interLink's "
        "SidecarURL unix://...; the socket's file mode (0660) is its access control"
    )
    api_token: SecretStr | None = Field(None, description="bearer token of the TCP listener")
    api_token_file: Path | None = Field(None, description="file holding the token")
    insecure_no_auth: bool = Field(False, description="serve TCP without a token (local only)")
    dms_url: str = Field("http://127.0.0.1:9999", description="the service-provider DMS")
    dms_token: SecretStr | None = Field(None, description="bearer token sent to DMS, if any")
    dms_timeout_seconds: float = Field(10.0, gt=0, description="time limit of one DMS call")
    dms_retries: int = Field(3, ge=0, le=10, description="retries of a DMS call that failed")
    dms_logs_path: str = Field("/api/v1/job/logs/{job_id}", description="DMS path of job logs")
    dms_cancel_path: str = Field("/api/v1/job/cancel/{job_id}",
                                 description="DMS path that cancels a job (POST)")
    store_path: Path = Field(Path("nunet-jobs.sqlite"), description="pod-job mapping database")
    resource_prefix: str = Field("nunet.io", description="domain of the advertised resources")
    gpu_only: bool = Field(False, description="advertise only the peers that have GPUs")
    pods: int = Field(110, ge=1, description="pods the virtual node accepts")
    peers_cache_seconds: float = Field(30.0, ge=0, description="how long a peers dump is reused")
    cancel_retry_seconds: float = Field(
        15.0, gt=0, description="pause between retries of the cancels DMS has not confirmed")
    stale_taint: str = Field(
        "nunet.io/resources-stale", description="key of the NoSchedule taint the ping asks "
        "for while DMS's peers dump fails (interLink 0.6.2 and later); empty for none")
    node_taints: list[NodeTaint] = Field(
        default_factory=list, description="the node's other taints, as a JSON list of "
        "{key, value, effect}: interLink 0.6.2 replaces the node's taints with the ping's")
    send_taints: bool = Field(True, description="answer the ping with the node's taints")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")

    @field_validator("resource_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_prefix(value)

    @field_validator("dms_logs_path", "dms_cancel_path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or "{job_id}" not in value:
            raise ValueError("must start with '/' and contain {job_id}")
        return value

    @model_validator(mode="after")
    def _token_given(self) -> Settings:
        if self.resolve_token() is None and not self.insecure_no_auth:
            raise ValueError(
                "no API token: set NUNET_PLUGIN_API_TOKEN or NUNET_PLUGIN_API_TOKEN_FILE "
                "(or NUNET_PLUGIN_INSECURE_NO_AUTH=true for a local experiment)"
            )
        return self

    def resolve_token(self) -> str | None:
        if self.api_token is not None:
            return self.api_token.get_secret_value()
        if self.api_token_file is not None:
            token = self.api_token_file.read_text().strip()
            return token or None
        return None
