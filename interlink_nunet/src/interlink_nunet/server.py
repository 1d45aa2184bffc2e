"""Run the plugin: ``aios-nunet-plugin`` (or ``python -m interlink_nunet``).

Settings come from ``NUNET_PLUGIN_*`` environment variables; a bad one stops the start
with a message naming it. JSON logs go to stderr, one object per line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError
from pydantic_settings import BaseSettings
from pythonjsonlogger.json import JsonFormatter

from interlink_nunet.app import create_app
from interlink_nunet.config import Settings
from interlink_nunet.dms import DMSClient
from interlink_nunet.metrics import PluginMetrics
from interlink_nunet.provider import NuNetProvider
from interlink_nunet.store import JobStore

log = logging.getLogger("interlink_nunet")


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                                       rename_fields={"levelname": "level", "asctime": "time"}))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def build(settings: Settings) -> NuNetProvider:
    store = JobStore(settings.store_path)
    dms = DMSClient(
        settings.dms_url,
        settings.dms_token.get_secret_value() if settings.dms_token else None,
        timeout=settings.dms_timeout_seconds,
        retries=settings.dms_retries,
        logs_path=settings.dms_logs_path,
        cancel_path=settings.dms_cancel_path,
    )
    return NuNetProvider(settings, dms, store, PluginMetrics(store.count))


async def serve(settings: Settings) -> None:
    provider = build(settings)
    token = settings.resolve_token()
    if token is None:
        log.warning("serving TCP WITHOUT a token (NUNET_PLUGIN_INSECURE_NO_AUTH): local use only")
    tcp = uvicorn.Server(uvicorn.Config(create_app(provider, token), host=settings.host,
                                        port=settings.port, log_config=None, access_log=False))
    runs = [tcp.serve()]
    if settings.socket is not None:
        unix = uvicorn.Server(uvicorn.Config(create_app(provider, None), log_config=None,
                                             access_log=False))
        runs.append(unix.serve(sockets=[unix_socket(settings.socket)]))
    log.info("NuNet plugin on %s:%s%s, DMS %s, %d mapped jobs", settings.host, settings.port,
             f" and unix://{settings.socket}" if settings.socket else "", settings.dms_url,
             provider.store.count())
    provider.start()
    try:
        await asyncio.gather(*runs)
    finally:
        provider.stop()
        provider.dms.close()
        provider.store.close()


def unix_socket(path: Path, mode: int = 0o660) -> socket.socket:
    """The listening socket for interLink, by default mode 0660: the owner and its group
    only (uvicorn would make its own socket 0666, open to every local user)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and stat.S_ISSOCK(path.stat().st_mode):
        path.unlink()  # left by a previous run
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    previous = os.umask(0o777 & ~mode)  # never, even briefly, more open than mode
    try:
        listener.bind(str(path))
    finally:
        os.umask(previous)
    os.chmod(path, mode)
    return listener


def load_settings(settings_class: type[BaseSettings]) -> BaseSettings | None:
    """The settings, or None after printing each bad one with its variable's name."""
    try:
        return settings_class()
    except ValidationError as exc:
        prefix = settings_class.model_config["env_prefix"]
        for error in exc.errors():
            field = ".".join(str(p) for p in error["loc"])
            where = f"{prefix}{field.upper()}" if field else "settings"
            print(f"error: {where}: {error['msg']}", file=sys.stderr)
        return None


def main() -> int:
    settings = load_settings(Settings)
    if settings is None:
        return 2
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
