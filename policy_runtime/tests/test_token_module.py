"""The collection's ``api_token`` module against a real runtime: create, idempotence, replace,
revoke, check mode."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

import httpx
from conftest import REPO_ROOT, RuntimeServer

MODULE = REPO_ROOT / "plugins" / "modules" / "api_token.py"
COLLECTIONS = REPO_ROOT / "build" / "collections"


def run_module(args: dict, check_mode: bool = False) -> dict:
    link = COLLECTIONS / "ansible_collections" / "aios" / "platform"
    if not link.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO_ROOT, target_is_directory=True)
    payload = {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}
    done = subprocess.run([sys.executable, str(MODULE)], input=json.dumps(payload),
                          capture_output=True, text=True, check=False, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(COLLECTIONS)})
    return json.loads(done.stdout)


def test_token_module(server: RuntimeServer) -> None:
    api = {"api_url": server.url, "api_token": server.token}
    name = f"mod-{secrets.token_hex(3)}"
    args = {"name": name, "role": "cluster-owner", "clusters": ["c-2", "c-1"], **api}
    preview = run_module(args, check_mode=True)
    assert preview["changed"] is True and "token" not in preview
    created = run_module(args)
    assert created["changed"] is True and created["record"]["clusters"] == ["c-1", "c-2"]
    token = created["token"]
    owner = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{server.url}/clusters/c-3", headers=owner).status_code == 403
    again = run_module(args)
    assert again["changed"] is False and "token" not in again
    other = run_module({**args, "clusters": ["c-9"]})
    assert other["failed"] is True and "clusters" in other["msg"]
    replaced = run_module({**args, "clusters": ["c-9"], "replace": True})
    assert replaced["changed"] is True and replaced["token"] != token
    time.sleep(1.05)  # the replaced token is revoked: refused within a second
    assert httpx.get(f"{server.url}/clusters/c-1", headers=owner).status_code == 401
    gone = run_module({"name": name, "state": "absent", **api})
    assert gone["changed"] is True and gone["record"]["revoked"]
    assert run_module({"name": name, "state": "absent", **api})["changed"] is False
    refused = run_module({**args, "api_token": replaced["token"]})
    assert refused["failed"] is True and refused["status"] == 401

