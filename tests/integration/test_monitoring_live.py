"""The monitoring against real processes: a policy runtime on its embedded database, the
NuNet plugin on the stand-in DMS, and a real Prometheus scraping both with the role's
rendered rules.

``promtool check metrics`` lints a real scrape of each service. Then faults are induced
(the database stopped, a policy timing out again and again, the DMS stopped, the remote
executor stopped, the cluster's nodes failing its stability policy, the plugin stopped, the
runtime stopped) and Prometheus's HTTP API must show the matching
alert go pending, then firing, then clear after recovery; each fault's alerts are printed.
Finally every PromQL expression of the dashboards must parse and return a series.

The test's copy of the rules runs time faster: every ``[Nm]`` range and ``for: Nm`` is
scaled to 2N seconds (Prometheus scrapes and evaluates every second); the thresholds that
are durations are rendered through the role's own variables. Nothing else changes.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from policy_runtime.embedded_db import EmbeddedDatabase
from render_site import REPO, manifests
from test_monitoring import dashboard_exprs, render_monitoring, rule_groups

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None,
                                reason="prometheus is not installed (Debian package prometheus)")

NUNET_TESTS = REPO / "interlink_nunet" / "tests"
SEED_CLUSTER = REPO / "policies" / "clusters" / "cluster-west-vision-001.json"
STABILITY = REPO / "policies" / "examples" / "cluster-stability"
# One minute of the rules is this many seconds of the test.
SECONDS_PER_MINUTE = 2
CLUSTER_ID = "monitoring-live"
# A cluster whose policies run on a remote executor: the executor process, which also
# plays the policies system (registered there under EXECUTOR_ID).
REMOTE_CLUSTER_ID = "monitoring-live-remote"
EXECUTOR_ID = "exec-live"
# Role variables that are durations, scaled like the rules.
RENDER_VARIABLES = {
    "monitoring_dms_stale_seconds": 6,
    "monitoring_stability_stale_seconds": 5,
}
OK_POLICY = "return {'allowed': True}"
LOOPING_POLICY = "while True:\n    pass"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def policy_code(body: str) -> str:
    indented = "\n".join("        " + line for line in body.splitlines())
    return ("class AIOSv1PolicyRule:\n"
            "    def __init__(self, rule_id, settings, parameters):\n        pass\n\n"
            "    def eval(self, parameters, input_data, context):\n" + indented + "\n")


class Service:
    """A child process serving HTTP on a fixed loopback port, stopped and restarted by the
    test (a restart keeps the port, so Prometheus scrapes the same target)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path,
                 health: str = "/healthz") -> None:
        self.name, self.command, self.env, self.log, self.health = name, command, env, log, health
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        with self.log.open("a") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            try:
                httpx.get(self.url + self.health, timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Stack:
    """The processes, the traffic an installation would see, and the Prometheus."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.token = secrets.token_urlsafe(24)
        self.plugin_token = secrets.token_urlsafe(24)
        self.db = EmbeddedDatabase(folder / "db")
        self.dms = Service("the stand-in DMS", [
            sys.executable, str(NUNET_TESTS / "dms_standin.py"), "--port", "{port}",
            "--state", str(folder / "dms.json"),
            "--peers", str(NUNET_TESTS / "fixtures" / "seed_peers.json")], {}, folder / "dms.log")
        self.plugin = Service("the NuNet plugin", [sys.executable, "-m", "interlink_nunet"], {
            "NUNET_PLUGIN_PORT": "", "NUNET_PLUGIN_API_TOKEN": self.plugin_token,
            "NUNET_PLUGIN_DMS_URL": self.dms.url, "NUNET_PLUGIN_DMS_RETRIES": "1",
            "NUNET_PLUGIN_DMS_TIMEOUT_SECONDS": "2",
            "NUNET_PLUGIN_STORE_PATH": str(folder / "jobs.sqlite"),
            "NUNET_PLUGIN_PEERS_CACHE_SECONDS": "0"}, folder / "plugin.log")
        self.plugin.env["NUNET_PLUGIN_PORT"] = str(self.plugin.port)
        self.executor_token = secrets.token_urlsafe(24)
        self.executor = Service("the remote executor", [
            sys.executable, "-m", "policy_runtime", "serve", "--port", "{port}"], {
            "AIOS_API_TOKEN": self.executor_token, "AIOS_RUN_MODES": "policies",
            "AIOS_POOL_SIZE": "1", "AIOS_DB_NAME": "aios_monitoring_executor",
            "AIOS_EXECUTOR_ALLOWED_HOSTS": "127.0.0.1"}, folder / "executor.log")
        self.runtime = Service("the policy runtime", [
            sys.executable, "-m", "policy_runtime", "serve", "--port", "{port}"], {
            "AIOS_API_TOKEN": self.token, "AIOS_RUN_MODES": "policies,clusters,controller",
            "AIOS_POOL_SIZE": "1", "AIOS_CLUSTER_ID": CLUSTER_ID,
            "AIOS_DB_NAME": "aios_monitoring", "AIOS_DB_TIMEOUT_SECONDS": "2",
            "AIOS_POLICY_CACHE_SECONDS": "0", "AIOS_POLICIES_URL": self.executor.url,
            "AIOS_REMOTE_TOKEN": self.executor_token, "AIOS_REMOTE_TIMEOUT_SECONDS": "2"},
            folder / "runtime.log")
        self.prometheus: subprocess.Popen | None = None
        self.prometheus_url = ""
        self.timeouts = threading.Event()  # set: evaluate the looping policy too
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.ok_uri = self.looping_uri = ""

    # -- the services ----------------------------------------------------------------
    def start(self) -> None:
        self.db.start()
        self.runtime.env["AIOS_MONGO_URI"] = self.db.uri
        self.executor.env["AIOS_MONGO_URI"] = self.db.uri
        self.dms.start()
        self.plugin.start()
        self.executor.start()
        self.runtime.start()
        with httpx.Client(base_url=self.executor.url, timeout=30, headers={
                "Authorization": f"Bearer {self.executor_token}"}) as executor:
            remote_uri = self.publish(executor, "monitoring.live-remote", OK_POLICY)
            assert executor.post("/executors", json={"id": EXECUTOR_ID,
                                                     "url": self.executor.url}).status_code == 201
        with self.api() as api:
            self.ok_uri = self.publish(api, "monitoring.live-ok", OK_POLICY)
            self.looping_uri = self.publish(api, "monitoring.live-loop", LOOPING_POLICY,
                                            timeout_seconds=0.2)
            # The controller's own cluster, stable, checked every second.
            cluster = {**json.loads(SEED_CLUSTER.read_text()), "id": CLUSTER_ID}
            assert api.post("/clusters", json=cluster).status_code == 201
            document = json.loads((STABILITY / "policy.json").read_text())
            document["code"] = (STABILITY / "policy.py").read_text()
            published = api.post("/policies", json=document)
            assert published.status_code in (200, 201), published.text
            self.push_nodes("stable.json")
            for action, data in (
                ("set_policy", {"policy_rule_uri": published.json()["policy_rule_uri"]}),
                ("set_interval", {"interval_seconds": 1}),
            ):
                answer = api.post("/mgmt", params={"cluster_id": CLUSTER_ID}, json={
                    "block_id": "", "service": "stability_checker", "mgmt_action": action,
                    "mgmt_data": data})
                assert answer.status_code == 200, answer.text
            # A governed action, for the governance panels.
            assert api.post("/pre-check-policies/update", params={"cluster_id": CLUSTER_ID},
                            json={"add_block": self.ok_uri}).status_code == 200
            # And one decided on the remote executor.
            remote = {**json.loads(SEED_CLUSTER.read_text()), "id": REMOTE_CLUSTER_ID}
            assert api.post("/clusters", json=remote).status_code == 201
            where = {"cluster_id": REMOTE_CLUSTER_ID}
            moved = api.post("/pre-check-policies/execution", params=where, json={
                "policyExecutionMode": "remote", "policyExecutorId": EXECUTOR_ID})
            assert moved.status_code == 200, moved.text
            mapped = api.post("/pre-check-policies/update", params=where,
                              json={"add_block": remote_uri})
            assert mapped.status_code == 200, mapped.text
        for name, work in (("runtime-traffic", self._runtime_traffic),
                           ("interlink-pings", self._pings)):
            thread = threading.Thread(target=work, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        if self.prometheus is not None:
            self.prometheus.send_signal(signal.SIGTERM)
            self.prometheus.wait(timeout=60)
        for service in (self.runtime, self.executor, self.plugin, self.dms):
            service.stop()
        self.db.stop()

    def push_nodes(self, case: str) -> None:
        """The node data of a case of the stability policy, for the controller's cluster."""
        nodes = json.loads((STABILITY / "cases" / case).read_text())["input_data"]["nodes_data"]
        with self.api() as api:
            pushed = api.put("/nodes-data", params={"cluster_id": CLUSTER_ID}, json=nodes)
            assert pushed.status_code == 200, pushed.text

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.runtime.url, timeout=30,
                             headers={"Authorization": f"Bearer {self.token}"})

    @staticmethod
    def publish(api: httpx.Client, name: str, body: str, **settings: float) -> str:
        answer = api.post("/policies", json={
            "name": f"aiosv1.policies.{name}-{secrets.token_hex(3)}", "version": "v1",
            "code": policy_code(body), "policy_settings": settings})
        assert answer.status_code == 201, answer.text
        return answer.json()["policy_rule_uri"]

    # -- traffic -----------------------------------------------------------------------
    def _runtime_traffic(self) -> None:
        """Decisions as clients make them: an ok policy twice a second, a governed action
        every other second, and the looping policy back to back while timeouts is set."""
        with self.api() as api:
            tick = 0
            while not self._stop.wait(0.5):
                tick += 1
                try:
                    api.post(f"/policies/{self.ok_uri}/eval", json={"input_data": {}})
                    if tick % 4 == 0:
                        for cluster_id in (CLUSTER_ID, REMOTE_CLUSTER_ID):
                            api.post("/pre-check/add_block", params={"cluster_id": cluster_id},
                                     json={})
                    while self.timeouts.is_set() and not self._stop.is_set():
                        api.post(f"/policies/{self.looping_uri}/eval", json={"input_data": {}})
                except httpx.TransportError:
                    pass  # the runtime is down on purpose

    def _pings(self) -> None:
        """interLink's ping (GET /status with []), every second."""
        headers = {"Authorization": f"Bearer {self.plugin_token}"}
        while not self._stop.wait(1.0):
            try:
                httpx.request("GET", f"{self.plugin.url}/status", json=[], headers=headers,
                              timeout=5)
            except httpx.TransportError:
                pass

    # -- Prometheus --------------------------------------------------------------------
    def start_prometheus(self, rendered: dict[str, dict]) -> None:
        rules = self.folder / "rules.yml"
        rules.write_text(yaml.safe_dump({"groups": scaled(rule_groups(rendered))},
                                        sort_keys=False))
        jobs = []
        for target, service, namespace, token in (
            ("policies-system", self.runtime, "registries", self.token),
            ("nunet-plugin", self.plugin, "interlink", self.plugin_token),
        ):
            # The scrape as the rendered ServiceMonitor asks for it.
            (endpoint,) = rendered[f"servicemonitor-{target}.yaml"]["spec"]["endpoints"]
            token_file = self.folder / f"{target}.token"
            token_file.write_text(token)
            jobs.append({
                "job_name": target,
                "metrics_path": endpoint["path"],
                "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
                "static_configs": [{"targets": [f"127.0.0.1:{service.port}"],
                                    "labels": {"namespace": namespace, "pod": f"{target}-0"}}],
                "relabel_configs": [{"target_label": r["targetLabel"],
                                     "replacement": r["replacement"]}
                                    for r in endpoint["relabelings"]],
            })
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(rules)], "scrape_configs": jobs}
        (self.folder / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        log = (self.folder / "prometheus.log").open("w")
        self.prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.folder / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.folder / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT)
        self.prometheus_url = f"http://127.0.0.1:{port}"
        wait_for("both targets up", lambda: len(self.query("up == 1")) == 2, self, 90)

    def get(self, path: str, **params: str) -> dict:
        assert self.prometheus is not None and self.prometheus.poll() is None, \
            (self.folder / "prometheus.log").read_text()[-3000:]
        try:
            answer = httpx.get(self.prometheus_url + path, params=params, timeout=10)
        except httpx.TransportError:
            return {}
        return answer.json() if answer.status_code in (200, 400, 422) else {}

    def query(self, expr: str) -> list[dict]:
        return (self.get("/api/v1/query", query=expr).get("data") or {}).get("result") or []

    def alerts(self) -> dict[str, str]:
        """Alert name -> firing or pending (firing wins when several series)."""
        found: dict[str, str] = {}
        for alert in (self.get("/api/v1/alerts").get("data") or {}).get("alerts") or []:
            name = alert["labels"]["alertname"]
            if found.get(name) != "firing":
                found[name] = alert["state"]
        return found


def scaled(groups: list[dict]) -> list[dict]:
    """The rule groups with every ``[Nm]`` range and ``for: Nm`` as 2N seconds."""
    def seconds(match: re.Match) -> str:
        return f"{int(match.group(1)) * SECONDS_PER_MINUTE}s"

    groups = copy.deepcopy(groups)
    for group in groups:
        for rule in group["rules"]:
            rule["expr"] = re.sub(r"(?<=\[)(\d+)m(?=\])", seconds, rule["expr"])
            if "for" in rule:
                rule["for"] = re.sub(r"^(\d+)m$", seconds, rule["for"])
    return groups


def wait_for(what: str, check: Callable[[], object], stack: Stack, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {seconds} s; alerts {stack.alerts()}")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("render")
    done = render_monitoring(folder, **RENDER_VARIABLES)
    assert done.returncode == 0, done.stdout[-3000:]
    return {path.name: m for path, m in manifests(folder / "monitoring").items()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, rendered: dict[str, dict]) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack"))
    try:
        running.start()
        running.start_prometheus(rendered)
        yield running
    finally:
        running.stop()


# --- the scrapes ------------------------------------------------------------------------------


def test_promtool_accepts_a_real_scrape_of_each_service(stack: Stack) -> None:
    wait_for("a decision, a governed action and a ping scraped", lambda: stack.query(
        'aios_governance_decisions_total > 0 and on () nunet_plugin_allocatable > 0'), stack, 60)
    for service, token in ((stack.runtime, stack.token), (stack.plugin, stack.plugin_token)):
        scrape = httpx.get(f"{service.url}/metrics", timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
        assert scrape.status_code == 200, scrape.text
        assert "# TYPE" in scrape.text
        linted = subprocess.run([PROMTOOL, "check", "metrics"], input=scrape.text,
                                capture_output=True, text=True, timeout=60, check=False)
        assert linted.returncode == 0 and not (linted.stdout + linted.stderr).strip(), (
            f"{service.name}: {linted.stdout}{linted.stderr}")


# --- faults and alerts ------------------------------------------------------------------------


class Fault:
    """One induced fault: which alerts must fire, and every alert seen meanwhile."""

    def __init__(self, stack: Stack, name: str, expected: set[str]) -> None:
        self.stack, self.name, self.expected = stack, name, expected
        self.seen: dict[str, set[str]] = {}

    def watch(self) -> dict[str, str]:
        current = self.stack.alerts()
        for alert, state in current.items():
            self.seen.setdefault(alert, set()).add(state)
        return current

    def fires(self, seconds: float = 120) -> None:
        wait_for(f"{self.name}: {sorted(self.expected)} firing",
                 lambda: all(self.watch().get(a) == "firing" for a in self.expected),
                 self.stack, seconds)

    def clears(self, seconds: float = 120) -> None:
        wait_for(f"{self.name} recovered: {sorted(self.expected)} cleared",
                 lambda: not set(self.watch()) & self.expected, self.stack, seconds)

    def report(self) -> str:
        others = sorted(set(self.seen) - self.expected)
        return (f"{self.name}: fired {sorted(self.expected)}"
                + (f"; also seen {others}" if others else "")
                + f"; states {dict(sorted((k, sorted(v)) for k, v in self.seen.items()))}")


def quiet(stack: Stack, alerts: set[str]) -> None:
    wait_for(f"{sorted(alerts)} quiet before the fault",
             lambda: not set(stack.alerts()) & alerts, stack, 120)


def test_each_fault_fires_its_alert_and_recovery_clears_it(stack: Stack) -> None:
    faults = []

    database = Fault(stack, "database stopped", {"AiosPolicyRuntimeDatabaseUnreachable",
                                                 "AiosStabilityCheckerNotRunning"})
    quiet(stack, database.expected)
    stack.db.stop()
    database.fires()
    assert {"pending", "firing"} <= database.seen["AiosPolicyRuntimeDatabaseUnreachable"]
    stack.db.start()
    database.clears()
    faults.append(database)

    timeouts = Fault(stack, "a policy timing out repeatedly", {
        "AiosPolicyDecisionsFailing", "AiosPolicyDecisionTimeouts"})
    quiet(stack, timeouts.expected)
    stack.timeouts.set()
    try:
        timeouts.fires()
    finally:
        stack.timeouts.clear()
    assert {"pending", "firing"} <= timeouts.seen["AiosPolicyDecisionsFailing"]
    timeouts.clears()
    faults.append(timeouts)

    dms = Fault(stack, "stand-in DMS stopped", {"AiosNunetDmsUnreachable",
                                                "AiosNunetJobsFailing"})
    quiet(stack, dms.expected)
    stack.dms.stop()
    dms.fires()
    assert {"pending", "firing"} <= dms.seen["AiosNunetDmsUnreachable"]
    stack.dms.start()
    dms.clears()
    faults.append(dms)

    remote = Fault(stack, "remote executor stopped", {"AiosRemoteExecutorUnreachable",
                                                      "AiosGovernanceFailingClosed"})
    quiet(stack, remote.expected)
    stack.executor.stop()
    remote.fires()
    assert {"pending", "firing"} <= remote.seen["AiosRemoteExecutorUnreachable"]
    stack.executor.start()
    remote.clears()
    faults.append(remote)

    unstable = Fault(stack, "cluster nodes failing its stability policy",
                     {"AiosClusterUnstable"})
    quiet(stack, unstable.expected)
    stack.push_nodes("unstable_gpu_and_cpu.json")
    unstable.fires()
    assert {"pending", "firing"} <= unstable.seen["AiosClusterUnstable"]
    stack.push_nodes("stable.json")
    unstable.clears()
    faults.append(unstable)

    plugin = Fault(stack, "NuNet plugin stopped", {"AiosNunetPluginDown"})
    quiet(stack, plugin.expected)
    stack.plugin.stop()
    plugin.fires()
    assert {"pending", "firing"} <= plugin.seen["AiosNunetPluginDown"]
    stack.plugin.start()
    plugin.clears()
    faults.append(plugin)

    runtime = Fault(stack, "policy runtime stopped", {"AiosPolicyRuntimeDown"})
    quiet(stack, runtime.expected)
    stack.runtime.stop()
    runtime.fires()
    assert {"pending", "firing"} <= runtime.seen["AiosPolicyRuntimeDown"]
    stack.runtime.start()
    runtime.clears()
    faults.append(runtime)

    for fault in faults:
        print(fault.report())


def test_every_dashboard_expression_returns_a_series(stack: Stack,
                                                     rendered: dict[str, dict]) -> None:
    # Series that appear only after something happened: a worker killed by a timeout and
    # a failed DMS call.
    with stack.api() as api:
        answer = api.post(f"/policies/{stack.looping_uri}/eval", json={"input_data": {}})
        assert answer.status_code == 504, answer.text
    httpx.post(f"{stack.dms.url}/_control/faults", json={"peers_fail": True}, timeout=5)
    try:
        wait_for("a failed DMS call scraped",
                 lambda: stack.query("nunet_plugin_dms_errors_total > 0"), stack, 60)
    finally:
        httpx.post(f"{stack.dms.url}/_control/faults", json={"peers_fail": False}, timeout=5)
    wait_for("a worker restart scraped",
             lambda: stack.query('aios_sandbox_worker_restarts_total{reason!="recycle"} > 0'),
             stack, 60)
    empty = []
    for expr in dashboard_exprs(rendered):
        concrete = expr.replace("$namespace", ".*").replace("$job", ".*")
        answer = stack.get("/api/v1/query", query=concrete)
        assert answer.get("status") == "success", f"{concrete}: {answer}"
        if not answer["data"]["result"]:
            empty.append(concrete)
    assert not empty, f"no series for: {empty}"
