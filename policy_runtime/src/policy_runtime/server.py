"""``aios-policy serve``: settings from env and flags, optional embedded database, uvicorn."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from policy_runtime import logs
from policy_runtime.api.app import create_app
from policy_runtime.config import ConfigError, Settings
from policy_runtime.embedded_db import EmbeddedDatabase

log = logging.getLogger("policy_runtime.server")


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        "host": args.host,
        "port": args.port,
        "run_modes": args.modes,
        "mongo_uri": args.mongo_uri,
        "insecure_no_auth": True if args.insecure_no_auth else None,
    }
    return Settings(**{k: v for k, v in flags.items() if v is not None})


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def serve(args: argparse.Namespace) -> int:
    try:
        settings = _settings(args)
        token = settings.resolve_token()
    except ValidationError as exc:
        print(f"aios-policy serve: invalid setting:\n{exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"aios-policy serve: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    if token is None:
        log.warning(
            "AUTHENTICATION IS OFF (--insecure-no-auth): anyone who can reach %s:%s can publish "
            "and run policies. Use this for local experiments only.",
            settings.host,
            settings.port,
        )
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal to
    # the handler it found; this one turns it into a clean exit 0, after the finally
    # below has stopped the embedded database. It also covers signals during start-up.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _exit_cleanly)
    embedded = None
    try:
        if args.embedded_db:
            embedded = EmbeddedDatabase(Path(args.embedded_db)).start()
            settings = settings.model_copy(update={"mongo_uri": embedded.uri})
            log.info("embedded database on port %s, data in %s", embedded.port, args.embedded_db)
        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_config=None,
            access_log=settings.access_log,
            timeout_graceful_shutdown=30,
        )
    finally:
        if embedded is not None:
            embedded.stop()
    return 0
