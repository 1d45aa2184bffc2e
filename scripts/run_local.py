"""`make run`: the embedded local default.

Starts ``aios-policy serve`` in every run mode in the background, with its embedded
database and a generated token (data, token and log in ``--dir``), then runs
``playbooks/local.yml`` on ``inventories/local`` against it: onboarding, governance,
stability and the rendered management-cluster manifests. The runtime keeps running for
you to try; ``make stop`` stops it. Running it again reuses what exists.
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
PREFERRED_PORT = 8080
LOCAL_CLUSTER_ID = "cluster-local-001"  # inventories/local/cluster.json
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
            token = secrets.token_urlsafe(32)
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(token + "\n")
            # Shown this once; afterwards it is only in the file (mode 0600).
            print(f"generated the API token {token}\n  (kept in {self.token_file}, mode 0600)")
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
    env = {**os.environ, "AIOS_API_TOKEN_FILE": str(local.token_file), "AIOS_ACCESS_LOG": "false",
           "AIOS_RUN_MODES": "policies,clusters,controller", "AIOS_CLUSTER_ID": LOCAL_CLUSTER_ID}
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


def run(local: Local, manifests: Path) -> int:
    url = start(local)
    token = owner_token(local, url)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
           "ANSIBLE_COLLECTIONS_PATH": str(REPO / "build" / "collections"),
           "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
           "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "false"}  # keep the progress readable
    print("running playbooks/local.yml (each task is shown as it runs)", flush=True)
    done = subprocess.run(
        [str(bin_dir / "ansible-playbook"), "-i", str(REPO / "inventories" / "local" / "hosts.yml"),
         str(REPO / "playbooks" / "local.yml"),
         "-e", json.dumps({"aios_api_url": url, "local_state_dir": str(local.dir),
                           "aios_render_dir": str(manifests)})],
        env=env, cwd=REPO, check=False,
    )
    if done.returncode != 0:
        print(f"\nplaybooks/local.yml failed (exit {done.returncode}); the runtime's log is "
              f"{local.log_file}; `make stop` stops the runtime")
        return done.returncode
    if tenant_demo(local, url, token) != 0:
        return 1
    print(closing_message(url, local.token_file, bin_dir))
    return 0


def closing_message(url: str, token_file: Path, bin_dir: Path) -> str:
    """What ``make run`` ends with: where the runtime is, how to try and stop it, and
    where the collection's tools are (``bin_dir``, relative to the checkout if inside)."""
    try:
        tools = bin_dir.relative_to(REPO)
        on_path = f"$PWD/{tools}"  # the message is for a shell in the checkout
    except ValueError:
        tools = on_path = bin_dir
    return "\n".join([
        f"\nThe runtime keeps running at {url} (API docs: {url}/docs).",
        f'  try:   curl -H "Authorization: Bearer $(cat {token_file})" {url}/clusters',
        "  stop:  make stop",
        f"  tools: aios-policy (eval, check, test) and ansible-playbook are in {tools}/; "
        "`make shell` opens a shell with them on PATH and the aios.platform collection "
        f'found (or:  export PATH="{on_path}:$PATH" '
        "ANSIBLE_COLLECTIONS_PATH=$PWD/build/collections)",
    ])


OTHER_CLUSTER_ID = "cluster-west-vision-001"


def owner_token(local: Local, url: str) -> str:
    """A fresh cluster-owner token of the sample cluster (its owner's, not the admin's),
    kept in ``owner-token`` (mode 0600); the playbook's governed updates use it."""
    admin = {"Authorization": f"Bearer {local.token()}"}
    name = f"owner-{LOCAL_CLUSTER_ID}"
    httpx.delete(f"{url}/tokens/{name}", headers=admin, timeout=30)  # a fresh one each run
    created = httpx.post(f"{url}/tokens", headers=admin, timeout=30, json={
        "name": name, "role": "cluster-owner", "clusters": [LOCAL_CLUSTER_ID]})
    created.raise_for_status()
    owner_file = local.dir / "owner-token"
    owner_file.unlink(missing_ok=True)
    fd = os.open(owner_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(created.json()["token"] + "\n")
    return created.json()["token"]


def tenant_demo(local: Local, url: str, token: str) -> int:
    """What the owner's token did (the playbook's governed updates, from the audit log),
    and its attempt on another cluster, refused with 403."""
    admin = {"Authorization": f"Bearer {local.token()}"}
    owner = {"Authorization": f"Bearer {token}"}
    name = f"owner-{LOCAL_CLUSTER_ID}"
    created = httpx.get(f"{url}/tokens/{name}", headers=admin, timeout=30).json()["created"]
    print(f"\nTenants: token {name!r} (role cluster-owner, scope {LOCAL_CLUSTER_ID}; in "
          f"{local.dir / 'owner-token'})")
    audit = httpx.get(f"{url}/audit", headers=admin, params={"token": name}, timeout=30).json()
    done = [entry for entry in reversed(audit) if entry["time"] >= created]
    for entry in done:
        print(f"  {entry['method']} {entry['path']} -> {entry['status']}")
    if not done:
        print("  (the playbook's governed updates had nothing left to change)")
    refused = httpx.patch(f"{url}/clusters/update/{OTHER_CLUSTER_ID}",
                          json={"reputation": 0.9}, headers=owner, timeout=30)
    print(f"  PATCH /clusters/update/{OTHER_CLUSTER_ID} -> {refused.status_code}: "
          f"{refused.json().get('detail')}")
    if refused.status_code != 403:
        print("  unexpected: a cluster outside the owner's scope must be refused")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=REPO / "build" / "local")
    parser.add_argument("--manifests", type=Path, default=REPO / "build" / "manifests",
                        help="where to render the management-cluster manifests")
    parser.add_argument("--stop", action="store_true", help="stop the running instance")
    args = parser.parse_args()
    local = Local(args.dir.resolve())
    if args.stop:
        stop(local)
        return 0
    return run(local, args.manifests.resolve())


if __name__ == "__main__":
    raise SystemExit(main())
