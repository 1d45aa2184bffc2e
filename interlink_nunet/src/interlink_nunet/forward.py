"""``aios-nunet-forward``: carries interLink's calls to the plugin, adding the token.

interLink calls its plugin without any credentials, and the plugin's TCP listener wants a
bearer token. When the plugin runs as its own Deployment (with its volume and probes),
this forwarder runs in interLink's pod, in the chart's plugin container: it listens on a
Unix socket in the volume that pod's containers share, and passes interLink's four routes,
and only those, to the plugin's Service with ``Authorization: Bearer <token>``. The token
never leaves the pod's Secret, and the plugin's TCP listener never serves without it.

Settings are ``NUNET_FORWARD_*`` environment variables (see README).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import httpx
import uvicorn
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from interlink_nunet.server import configure_logging, load_settings, unix_socket

log = logging.getLogger("interlink_nunet.forward")

# interLink's plugin API: the only calls the forwarder carries.
INTERLINK_ROUTES = {"/create": ["POST"], "/delete": ["POST"], "/status": ["GET"],
                    "/getLogs": ["GET"]}


class ForwarderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NUNET_FORWARD_", extra="ignore")

    socket: Path = Field(description="Unix socket interLink calls (its SidecarURL unix://...)")
    socket_mode: str = Field(
        "660", pattern="^[0-7]{3}$", description="file mode of the socket, octal; 666 when "
        "interLink runs as another user and the socket's folder is the pod's own volume")
    upstream: str = Field(description="the plugin's TCP address, http://<service>:<port>")
    api_token: SecretStr | None = Field(None, description="the plugin's bearer token")
    api_token_file: Path | None = Field(None, description="file holding the token")
    timeout_seconds: float = Field(120.0, gt=0, description="time limit of one forwarded call")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")

    @field_validator("upstream")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. http://nunet-plugin:4000")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _token_given(self) -> ForwarderSettings:
        if not self.token():
            raise ValueError("no token: set NUNET_FORWARD_API_TOKEN or NUNET_FORWARD_API_TOKEN_FILE"
                             " to the plugin's NUNET_PLUGIN_API_TOKEN")
        return self

    def token(self) -> str:
        if self.api_token is not None:
            return self.api_token.get_secret_value()
        if self.api_token_file is not None:
            return self.api_token_file.read_text().strip()
        return ""


def create_forwarder(upstream: str, token: str, timeout: float) -> Starlette:
    client = httpx.AsyncClient(base_url=upstream, timeout=timeout,
                               headers={"Authorization": f"Bearer {token}"})

    async def forward(request: Request) -> Response:
        try:
            answer = await client.request(
                request.method, request.url.path, params=request.query_params,
                content=await request.body(),
                headers={"Content-Type": request.headers.get("content-type", "application/json")})
        except httpx.TimeoutException:
            return JSONResponse({"detail": f"the NuNet plugin at {upstream} did not answer "
                                 f"within {timeout:g} s"}, status_code=504)
        except httpx.TransportError as exc:
            return JSONResponse({"detail": f"the NuNet plugin at {upstream} cannot be reached: "
                                 f"{exc or type(exc).__name__}"}, status_code=503)
        if answer.status_code == 401:
            log.error("the NuNet plugin refused the forwarder's token: NUNET_FORWARD_API_TOKEN "
                      "must equal the plugin's NUNET_PLUGIN_API_TOKEN")
        return Response(answer.content, status_code=answer.status_code,
                        media_type=answer.headers.get("content-type"))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette):
        yield
        await client.aclose()

    routes = [Route(path, forward, methods=methods) for path, methods in INTERLINK_ROUTES.items()]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> int:
    settings = load_settings(ForwarderSettings)
    if settings is None:
        return 2
    configure_logging(settings.log_level)
    app = create_forwarder(settings.upstream, settings.token(), settings.timeout_seconds)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    log.info("forwarding interLink from unix://%s to %s", settings.socket, settings.upstream)
    listener = unix_socket(settings.socket, int(settings.socket_mode, 8))
    asyncio.run(server.serve(sockets=[listener]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
