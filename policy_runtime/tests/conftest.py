"""Fixtures: a real sandbox pool, a real embedded database process, a real server process."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from policy_runtime.embedded_db import EmbeddedDatabase
from policy_runtime.evaluation import LimitsConfig, PolicyEvaluator
from policy_runtime.sandbox.pool import WorkerPool

REPO_ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = REPO_ROOT / "policies" / "examples"
EXAMPLE_DIRS = sorted(p for p in EXAMPLES_DIR.iterdir() if (p / "policy.py").is_file())
SEED_CLUSTER = REPO_ROOT / "policies" / "clusters" / "cluster-west-vision-001.json"


@pytest.fixture(scope="session")
def pool() -> Iterator[WorkerPool]:
    with WorkerPool(2, max_memory_mb=1024, queue_timeout_seconds=30) as workers:
        yield workers


@pytest.fixture(scope="session")
def evaluator(pool: WorkerPool) -> PolicyEvaluator:
    return PolicyEvaluator(pool, LimitsConfig(default_timeout_seconds=1.0))


@pytest.fixture(scope="session")
def embedded_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedDatabase]:
    with EmbeddedDatabase(tmp_path_factory.mktemp("embedded-db")) as database:
        yield database


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RuntimeServer:
    """``aios-policy serve`` as a real child process."""

    def __init__(self, mongo_uri: str, token: str, log_path: Path, **env: str) -> None:
        self.port = free_port()
        self.token = token
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._env = {
            **os.environ,
            "AIOS_MONGO_URI": mongo_uri,
            "AIOS_API_TOKEN": token,
            "AIOS_DB_NAME": "aios_test",
            "AIOS_POOL_SIZE": "2",
            "AIOS_RUN_MODES": "policies,clusters,controller",
            "AIOS_POLICY_CACHE_SECONDS": "0",
            "AIOS_EXECUTOR_ALLOWED_HOSTS": "127.0.0.1,executor.invalid",
            **env,
        }
        self.proc: subprocess.Popen | None = None
        # More ``serve`` arguments (e.g. --embedded-db DIR), and whether the server leads a
        # process group of its own (which a test may then kill as a whole).
        self.args: list[str] = []
        self.own_process_group = False

    def start(self) -> RuntimeServer:
        log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "policy_runtime", "serve", "--port", str(self.port),
             *self.args],
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=self.own_process_group,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not become healthy:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def runtime_of_its_own(
    embedded_db: EmbeddedDatabase, tmp_path_factory: pytest.TempPathFactory, name: str
) -> Iterator[RuntimeServer]:
    """A runtime (and database) for one test module, for tests that read per-cluster
    metrics: a runtime labels only the first AIOS_METRICS_MAX_CLUSTERS clusters it reports
    on, and the suite's shared runtime has reported on many by the time they run."""
    log_path = tmp_path_factory.mktemp(name) / "server.log"
    runtime = RuntimeServer(embedded_db.uri, secrets.token_urlsafe(32), log_path,
                            AIOS_DB_NAME=f"aios_{name}").start()
    yield runtime
    runtime.stop()


@pytest.fixture(scope="session")
def server(
    embedded_db: EmbeddedDatabase, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RuntimeServer]:
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    runtime = RuntimeServer(embedded_db.uri, secrets.token_urlsafe(32), log_path).start()
    yield runtime
    runtime.stop()


@pytest.fixture()
def api(server: RuntimeServer) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


@pytest.fixture()
def unique_name(request: pytest.FixtureRequest) -> str:
    """A policy name no other test uses (published versions are immutable)."""
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    return f"aiosv1.policies.test.{safe[:60]}-{secrets.token_hex(3)}"


def seed_cluster(cluster_id: str) -> dict:
    """The seed's example cluster document under another id."""
    return {**json.loads(SEED_CLUSTER.read_text()), "id": cluster_id}


def pytest_terminal_summary(terminalreporter) -> None:
    """Report how much the API fuzzing sent and what the reliability scenarios measured."""
    reliability = sys.modules.get("test_reliability")
    for line in reliability.REPORT if reliability else []:
        terminalreporter.write_line(line)
    fuzz = sys.modules.get("test_fuzz_api")
    if fuzz and fuzz.FUZZ_COUNTS["cases"]:
        counts = fuzz.FUZZ_COUNTS
        terminalreporter.write_line(
            f"schemathesis: {counts['cases']} generated requests over "
            f"{len(counts['operations'])} operations, none answered 5xx"
            if not terminalreporter.stats.get("failed") else
            f"schemathesis: {counts['cases']} generated requests (see the failures above)")
