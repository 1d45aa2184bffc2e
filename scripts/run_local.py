"""`make run`: the policy runtime on this machine with its embedded database.

Starts ``aios-policy serve`` in the background (data and logs in ``--dir``), publishes
every policy under ``policies/examples`` through the HTTP API, evaluates each policy's
test cases through the API and prints the decisions. The runtime keeps running for you
to try; ``make stop`` stops it. Running it again reuses the running instance.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "policies" / "examples"
PREFERRED_PORT = 8080
START_TIMEOUT_SECONDS = 90


class Local:
    """The files of the local instance under one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.token_file = directory / "api-token"
        self.state_file = directory / "runtime.json"
        self.log_file = directory / "runtime.log"
        self.db_dir = directory / "db"

    def token(self) -> str:
        if not self.token_file.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(32) + "\n")
        return self.token_file.read_text().strip()

    def state(self) -> dict[str, Any] | None:
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return state if _alive(state.get("pid", 0)) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError, OverflowError, ValueError):
        return False
    return pid > 0


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    if _port_free(PREFERRED_PORT):
        return PREFERRED_PORT
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def start(local: Local) -> str:
    """The URL of a healthy runtime, started now or already running."""
    state = local.state()
    if state and _healthy(state["url"]):
        print(f"runtime already running at {state['url']} (pid {state['pid']})")
        return state["url"]
    local.token()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AIOS_API_TOKEN_FILE": str(local.token_file), "AIOS_ACCESS_LOG": "false"}
    env.pop("AIOS_API_TOKEN", None)
    with local.log_file.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "policy_runtime", "serve", "--port", str(port),
             "--embedded-db", str(local.db_dir)],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,  # keeps running after `make run` returns
        )
    local.state_file.write_text(json.dumps({"pid": proc.pid, "url": url}))
    print(f"starting the runtime at {url} (database in {local.db_dir})", end="", flush=True)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            print(f"\nthe runtime exited with status {proc.returncode}; its log says:")
            print("\n".join(local.log_file.read_text().splitlines()[-20:]))
            raise SystemExit(1)
        if _healthy(url):
            print(" ready")
            return url
        print(".", end="", flush=True)
        time.sleep(0.5)
    print(f"\nno healthy runtime after {START_TIMEOUT_SECONDS} s; see {local.log_file}")
    raise SystemExit(1)


def stop(local: Local) -> None:
    state = local.state()
    if state is None:
        print("the local runtime is not running")
        return
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 40
    while _alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    local.state_file.unlink(missing_ok=True)
    print(f"stopped the runtime (pid {state['pid']}); data stays in {local.db_dir}")


def _publish(api: httpx.Client, directory: Path) -> str:
    document = json.loads((directory / "policy.json").read_text())
    document["code"] = (directory / "policy.py").read_text()
    response = api.post("/policies", json=document)
    if response.status_code not in (200, 201):
        raise SystemExit(
            f"publishing {directory.name} failed ({response.status_code}): {response.text}"
        )
    body = response.json()
    state = "published" if body["created"] else "already published"
    print(f"\n{body['policy_rule_uri']}  ({state})")
    return body["policy_rule_uri"]


def _describe(body: dict) -> str:
    if not body.get("ok"):
        return f"{body['error']['type']}: {body['error']['message']}"
    result = body["result"]
    if isinstance(result, dict) and "allowed" in result:
        verdict = "allowed" if result["allowed"] else "denied"
        return f"{verdict}{' - ' + result['reason'] if result.get('reason') else ''}"
    if isinstance(result, dict) and "is_stable" in result:
        return "stable" if result["is_stable"] else "unstable"
    return json.dumps(result)


def _run_case(api: httpx.Client, uri: str, path: Path) -> bool:
    case = json.loads(path.read_text())
    request = {"input_data": case.get("input_data"), "parameters": case.get("parameters") or {}}
    body = api.post(f"/policies/{uri}/eval", json=request).json()
    if "expected_error" in case:
        passed = not body.get("ok") and body["error"]["type"] == case["expected_error"]
    else:
        passed = bool(body.get("ok")) and body["result"] == case["expected"]
    timing = f"{body['duration_ms']:.1f} ms" if body.get("ok") else ""
    print(f"  {'PASS' if passed else 'FAIL'}  {path.stem:32} {_describe(body)[:90]}  {timing}")
    return passed


def run(local: Local) -> int:
    url = start(local)
    headers = {"Authorization": f"Bearer {local.token()}"}
    passed = failed = 0
    with httpx.Client(base_url=url, headers=headers, timeout=30) as api:
        directories = sorted(p for p in EXAMPLES.iterdir() if (p / "policy.py").is_file())
        for directory in directories:
            uri = _publish(api, directory)
            for case in sorted((directory / "cases").glob("*.json")):
                if _run_case(api, uri, case):
                    passed += 1
                else:
                    failed += 1
    print(f"\n{len(directories)} policies published, {passed} decisions as expected, {failed} not")
    print(f"\nThe runtime keeps running at {url} (API docs: {url}/docs).")
    print(f"  token:  {local.token_file}")
    print(f'  try:    curl -H "Authorization: Bearer $(cat {local.token_file})" {url}/policies')
    print("  stop:   make stop")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=REPO / "build" / "local")
    parser.add_argument("--stop", action="store_true", help="stop the running instance")
    args = parser.parse_args()
    local = Local(args.dir.resolve())
    if args.stop:
        stop(local)
        return 0
    return run(local)


if __name__ == "__main__":
    raise SystemExit(main())
