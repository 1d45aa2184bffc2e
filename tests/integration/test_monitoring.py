"""The monitoring role: ServiceMonitors, PrometheusRule and Grafana dashboards.

What render mode writes is checked against the prometheus-operator's own CRD schemas (from
its Go module, fetched at test time), by ``promtool check rules`` and by ``promtool test
rules`` with cases for every alert (tests/integration/monitoring/alerts_test.yml: input
series, then the alert fires or does not). Every metric the rules and dashboards read must
be one the runtime or the NuNet plugin really exports. Apply mode runs on the tests' real
control plane with and without the operator's CRDs, and a real Prometheus scrapes a real
policy runtime and evaluates the recording rules.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml
from control_plane import ControlPlane
from render_site import REPO, manifests, render_site, run_playbook

FIXTURES = Path(__file__).resolve().parent / "monitoring"
PUBLIC = {"aios_public_address": "203.0.113.10"}
# The prometheus-operator's CRDs: example/prometheus-operator-crd/ of its Go module.
CRD_MODULE = "github.com/prometheus-operator/prometheus-operator"
CRD_VERSION = "v0.85.0"
CRD_FILES = {"ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
             "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml"}
EXPECTED_FILES = {
    "namespace-monitoring.yaml",
    "servicemonitor-policies-system.yaml",
    "servicemonitor-clusters-db-service.yaml",
    "servicemonitor-nunet-plugin.yaml",
    "servicemonitor-controllers.yaml",
    "secret-aios-controller-metrics-token.yaml",
    "namespace-controllers.yaml",  # the Secret's, so that the folder applies on its own
    "prometheusrule-aios.yaml",
    "configmap-aios-policy-runtime-dashboard.yaml",
    "configmap-aios-nunet-plugin-dashboard.yaml",
}
# Series the rules read that Prometheus provides rather than the code.
OTHER_EXPORTERS = {"up"}

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")


# --- rendering ----------------------------------------------------------------------------


def render_monitoring(directory: Path, **extra: object) -> subprocess.CompletedProcess:
    """playbooks/site.yml in render mode, monitoring only (its tag)."""
    variables = {"aios_render_dir": str(directory), "ansible_connection": "local",
                 **PUBLIC, **extra}
    return run_playbook("site.yml", variables, "--tags", "monitoring", timeout=600)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """File name -> manifest of the monitoring folder of a full render of site.yml."""
    directory = tmp_path_factory.mktemp("render")
    done = render_site(directory, PUBLIC)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {path.name: m for path, m in manifests(directory / "monitoring").items()}


def rule_groups(rendered: dict[str, dict]) -> list[dict]:
    return rendered["prometheusrule-aios.yaml"]["spec"]["groups"]


def alerts(rendered: dict[str, dict]) -> list[dict]:
    return [r for g in rule_groups(rendered) for r in g["rules"] if "alert" in r]


def write_rules(directory: Path, groups: list[dict], annotations: bool = True) -> Path:
    groups = copy.deepcopy(groups)
    if not annotations:
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    path = directory / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def promtool_test(directory: Path, groups: list[dict]) -> subprocess.CompletedProcess:
    """``promtool test rules`` of the fixture's cases against ``groups``."""
    write_rules(directory, groups, annotations=False)
    shutil.copy(FIXTURES / "alerts_test.yml", directory / "alerts_test.yml")
    return subprocess.run([PROMTOOL, "test", "rules", "alerts_test.yml"], cwd=directory,
                          capture_output=True, text=True, timeout=120, check=False)


def test_render_writes_the_monitoring(rendered: dict[str, dict]) -> None:
    assert set(rendered) == EXPECTED_FILES
    for manifest in rendered.values():
        assert manifest["metadata"]["labels"]["app.kubernetes.io/part-of"] == "aios"


def test_service_monitors_scrape_the_runtime_and_plugin_services(
    rendered: dict[str, dict],
) -> None:
    """Each ServiceMonitor selects the Service its component table renders, on a port of
    that Service, with a token the component accepts: the NuNet plugin's own, and for the
    runtimes the reader token the policy_runtime role makes for Prometheus (never their
    admin token)."""
    registries = yaml.safe_load((REPO / "roles/registries/defaults/main.yml").read_text())
    interlink = yaml.safe_load((REPO / "roles/interlink/vars/main.yml").read_text())
    aios = yaml.safe_load((REPO / "roles/aios/defaults/main.yml").read_text())
    runtime = yaml.safe_load((REPO / "roles/policy_runtime/defaults/main.yml").read_text())
    prometheus = next(row for row in runtime["policy_runtime_component_tokens"]
                      if row["name"] == "prometheus")
    rows = {row["name"]: (registries["registries_namespace"], row)
            for row in registries["registries_components"]}
    rows["nunet-plugin"] = ("interlink", interlink["_interlink_plugin_component"])
    expected = {"policies-system": "policies-system", "clusters-db-service": "clusters-db",
                "nunet-plugin": "nunet-plugin"}
    for service, row_name in expected.items():
        monitor = rendered[f"servicemonitor-{service}.yaml"]
        namespace, row = rows[row_name]
        assert row["service"] == service
        assert monitor["metadata"]["namespace"] == namespace
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [namespace]}
        assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == row_name
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in row["ports"]}
        assert endpoint["path"] == "/metrics"
        secret = endpoint["authorization"]["credentials"]
        assert secret["key"] == "token"
        if row_name == "nunet-plugin":
            assert row["secret_env"].count("'secret': '" + secret["name"] + "'") == 1
        else:
            assert secret["name"] == f"{prometheus['name']}-runtime-token"
            assert secret["name"] != aios["aios_runtime_token_secret"]
            assert (prometheus["policies"], prometheus["clusters"]) == ("reader", "reader")
            assert prometheus["namespace"] == "{{ registries_namespace | default('registries') }}"

    # The controllers: every Service cluster_onboarding renders in its controllers' namespace.
    onboarding = yaml.safe_load((REPO / "roles/cluster_onboarding/defaults/main.yml").read_text())
    monitor = rendered["servicemonitor-controllers.yaml"]
    namespace = onboarding["cluster_onboarding_controller_namespace"]
    assert monitor["metadata"]["namespace"] == namespace
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [namespace]}
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/component": "cluster_onboarding", "app.kubernetes.io/part-of": "aios"}
    (endpoint,) = monitor["spec"]["endpoints"]
    row = onboarding["_cluster_onboarding_controller_row"]
    assert endpoint["port"] == "http" and "'name': 'http'" in row["ports"]
    secret = rendered["secret-aios-controller-metrics-token.yaml"]
    assert endpoint["authorization"]["credentials"] == {"name": secret["metadata"]["name"],
                                                        "key": "token"}
    assert secret["metadata"]["namespace"] == namespace
    assert len(secret["stringData"]["token"]) >= 32


# --- the operator's CRD schemas -------------------------------------------------------------


def operator_crds() -> dict[str, dict]:
    """Kind -> the prometheus-operator's CRD, from its Go module (the module proxy)."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed: the prometheus-operator's CRDs come from its Go module")
    done = subprocess.run(
        [go, "mod", "download", "-json", f"{CRD_MODULE}@{CRD_VERSION}"],
        capture_output=True, text=True, timeout=600, check=False, cwd=tempfile.gettempdir(),
        env={**os.environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "on"},
    )
    info = json.loads(done.stdout or "{}")
    assert done.returncode == 0 and "Error" not in info, done.stdout + done.stderr
    folder = Path(info["Dir"]) / "example" / "prometheus-operator-crd"
    return {kind: yaml.safe_load((folder / name).read_text()) for kind, name in CRD_FILES.items()}


def strict(schema: dict) -> dict:
    """A CRD's OpenAPI v3 schema as JSON Schema that, like ``kubectl --validate=strict``,
    refuses unknown fields."""
    schema = dict(schema)
    if schema.pop("x-kubernetes-int-or-string", False):
        schema.pop("type", None)
        schema.setdefault("allOf", []).append({"type": ["integer", "string"]})
    for key in ("properties", "patternProperties"):
        if key in schema:
            schema[key] = {name: strict(sub) for name, sub in schema[key].items()}
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(sub) for sub in schema[key]]
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        schema["additionalProperties"] = False
    return schema


@pytest.fixture(scope="module")
def validators() -> dict[str, jsonschema.Draft7Validator]:
    """Kind -> a strict validator of the CRD's served version."""
    found = {}
    for kind, crd in operator_crds().items():
        (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["name"] == "v1"]
        found[kind] = jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))
    return found


def schema_errors(validators: dict, manifest: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validators[manifest["kind"]].iter_errors(manifest)]


def test_custom_resources_match_the_operator_crds(rendered: dict[str, dict],
                                                  validators: dict) -> None:
    checked = 0
    for name, manifest in rendered.items():
        if manifest["apiVersion"] == "monitoring.coreos.com/v1":
            assert schema_errors(validators, manifest) == [], name
            checked += 1
    assert checked == 5


def test_the_schema_check_refuses_what_the_operator_refuses(rendered: dict[str, dict],
                                                            validators: dict) -> None:
    monitor = rendered["servicemonitor-policies-system.yaml"]
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["bearerTokenSecrett"] = {"name": "x", "key": "token"}
    assert any("bearerTokenSecrett" in e for e in schema_errors(validators, broken))
    broken = copy.deepcopy(monitor)
    broken["spec"]["endpoints"][0]["interval"] = "30 seconds"
    assert any("endpoints.0.interval" in e for e in schema_errors(validators, broken))
    rule = copy.deepcopy(rendered["prometheusrule-aios.yaml"])
    del rule["spec"]["groups"][0]["name"]
    assert any("'name' is a required property" in e for e in schema_errors(validators, rule))


# --- the rules ------------------------------------------------------------------------------


@needs_promtool
def test_promtool_accepts_the_rules(rendered: dict[str, dict], tmp_path: Path) -> None:
    path = write_rules(tmp_path, rule_groups(rendered))
    done = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(len(g["rules"]) for g in rule_groups(rendered))
    assert f"SUCCESS: {count} rules found" in done.stdout


@needs_promtool
def test_every_alert_fires_and_stays_quiet_as_its_cases_say(rendered: dict[str, dict],
                                                           tmp_path: Path) -> None:
    done = promtool_test(tmp_path, rule_groups(rendered))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_cases_and_a_runbook(rendered: dict[str, dict]) -> None:
    cases = yaml.safe_load((FIXTURES / "alerts_test.yml").read_text())["tests"]
    checks = [c for case in cases for c in case.get("alert_rule_test", [])]
    for alert in alerts(rendered):
        name = alert["alert"]
        mine = [c for c in checks if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name} has no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{name} has no case where it is quiet"
        notes = alert["annotations"]
        assert set(notes) == {"summary", "description", "runbook"}, name
        assert all(len(text.split()) >= 5 for text in notes.values()), name
        assert alert["labels"]["severity"] in {"warning", "critical"}


@needs_promtool
def test_thresholds_come_from_the_role_variables(tmp_path: Path) -> None:
    """With a ratio of 0.5 the failing-decisions case (ratio 0.25) must no longer fire."""
    done = render_monitoring(tmp_path / "render", monitoring_decision_error_ratio=0.5,
                             monitoring_labels={"release": "kube-prometheus-stack"})
    assert done.returncode == 0, done.stdout[-3000:]
    found = {p.name: m for p, m in manifests(tmp_path / "render" / "monitoring").items()}
    for name in ("prometheusrule-aios.yaml", "servicemonitor-nunet-plugin.yaml"):
        assert found[name]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    run = tmp_path / "promtool"
    run.mkdir()
    failed = promtool_test(run, rule_groups(found))
    assert failed.returncode != 0
    assert "alertname: AiosPolicyDecisionsFailing, time: 20m" in failed.stdout + failed.stderr


def test_monitoring_false_renders_nothing(tmp_path: Path) -> None:
    done = render_monitoring(tmp_path, aios_monitoring=False)
    assert done.returncode == 0, done.stdout[-3000:]
    assert not (tmp_path / "monitoring").exists()
    done = render_monitoring(tmp_path, aios_monitoring="sometimes")
    assert done.returncode != 0
    assert "aios_monitoring must be true, false or auto" in done.stdout


# --- metrics the code exports ---------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """Every series name the runtime's and the plugin's registries expose."""
    from interlink_nunet.metrics import PluginMetrics
    from policy_runtime.metrics import RuntimeMetrics

    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_count", "_sum", "_created")}
    names = set()
    for registry in (RuntimeMetrics().registry, PluginMetrics(lambda: 0.0).registry):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (label matchers and groupings removed)."""
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr))
    functions = {"sum", "max", "rate", "increase", "histogram_quantile", "absent", "and", "or",
                 "e", "Inf", "time", "clamp_min"}
    return {w for w in words if w not in functions}


def dashboard_exprs(rendered: dict[str, dict]) -> list[str]:
    exprs = []
    for manifest in rendered.values():
        if manifest["kind"] == "ConfigMap":
            for text in manifest["data"].values():
                board = json.loads(text)
                exprs += [t["expr"] for p in board["panels"] for t in p.get("targets") or []]
    return exprs


def test_rules_and_dashboards_read_only_exported_metrics(rendered: dict[str, dict]) -> None:
    exported = exported_metric_names()
    recorded = {r["record"] for g in rule_groups(rendered) for r in g["rules"] if "record" in r}
    rule_exprs = [r["expr"] for g in rule_groups(rendered) for r in g["rules"]]
    boards = dashboard_exprs(rendered)
    assert len(boards) >= 20
    used = set()
    for expr in rule_exprs + boards:
        names = metric_names(expr.replace("$namespace", "").replace("$job", ""))
        assert names, expr
        unknown = names - exported - recorded - OTHER_EXPORTERS
        assert not unknown, f"{expr} reads {unknown}, which nothing exports"
        used |= names
    # Every family the code exports shows somewhere.
    families = {n.removesuffix("_total").removesuffix("_bucket") for n in used & exported}
    for family in ("aios_policy_decisions", "aios_policy_decision_duration_seconds",
                   "aios_sandbox_worker_restarts", "aios_cluster_stable",
                   "nunet_plugin_requests", "nunet_plugin_jobs_created",
                   "nunet_plugin_jobs_deleted", "nunet_plugin_dms_request_seconds",
                   "nunet_plugin_dms_errors", "nunet_plugin_allocatable",
                   "nunet_plugin_mapped_jobs", "nunet_plugin_pending_cancels",
                   "nunet_plugin_resources_age_seconds", "aios_database_up",
                   "aios_governance_decisions", "aios_governance_cluster_decisions",
                   "aios_stability_checks", "aios_unstable_clusters",
                   "aios_stability_last_check_timestamp_seconds",
                   "aios_stability_interval_seconds", "aios_remote_executions",
                   "aios_remote_execution_duration_seconds", "aios_registry_clusters",
                   "nunet_plugin_capacity"):
        assert family in families or f"{family}_count" in used, family


# --- dashboards -----------------------------------------------------------------------------


def test_dashboards_are_generated_and_shipped_for_the_grafana_sidecar(
    rendered: dict[str, dict],
) -> None:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "dashboards.py"), "--check"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    files = REPO / "roles" / "monitoring" / "files" / "dashboards"
    boards = {}
    for name in ("aios-policy-runtime", "aios-nunet-plugin"):
        config_map = rendered[f"configmap-{name}-dashboard.yaml"]
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        text = config_map["data"][f"{name}.json"]
        assert text.strip() == (files / f"{name}.json").read_text().strip()
        boards[name] = json.loads(text)
    titles = {p["title"] for b in boards.values() for p in b["panels"]}
    assert {"Decisions by outcome", "Decision latency quantiles",
            "Worker kills and respawns by reason", "GPUs by kind: capacity and allocatable",
            "Clusters in the registry",
            "Governed actions by action and outcome", "Governed actions by cluster",
            "Stability checks by outcome", "Age of the latest stability check",
            "Remote executions by outcome",
            "Jobs created and deleted", "DMS errors by operation"} <= titles
    for board in boards.values():
        assert board["uid"] and board["templating"]["list"][0]["type"] == "datasource"
        ids = [p["id"] for p in board["panels"]]
        assert len(set(ids)) == len(ids) and 0 not in ids
        for panel in board["panels"]:
            for target in panel.get("targets") or []:
                assert panel["datasource"]["uid"] == "${datasource}" and target["refId"]


# --- apply mode on a real control plane ------------------------------------------------------


def live_playbook(kube: ControlPlane, **extra: object) -> subprocess.CompletedProcess:
    variables = {"aios_kubeconfig": str(kube.kubeconfig), **PUBLIC, **extra}
    return run_playbook("site.yml", variables, "-c", "local", "--tags", "monitoring")


def established(kube: ControlPlane, name: str) -> bool:
    crd = kube.get("CustomResourceDefinition", name) or {}
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def contained(part: object, whole: object) -> bool:
    """``part`` is ``whole`` or, for mappings, a subset of it (the server may add defaults)."""
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            k in whole and contained(v, whole[k]) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(whole, list) and len(part) == len(whole) and all(
            contained(a, b) for a, b in zip(part, whole, strict=True))
    return part == whole


def test_apply_follows_the_setting_and_the_crds(kube: ControlPlane,
                                                rendered: dict[str, dict]) -> None:
    # auto without the operator: nothing, and the run says why.
    done = live_playbook(kube)
    assert done.returncode == 0, done.stdout[-4000:]
    assert "no prometheus-operator CRDs" in done.stdout
    assert kube.get("Namespace", "monitoring") is None
    # true without the operator: a clear failure.
    done = live_playbook(kube, aios_monitoring=True)
    assert done.returncode != 0
    assert "install the prometheus-operator" in done.stdout

    # With the operator's CRDs the API server itself validates every object, and what it
    # stores must hold every field rendered (it prunes fields its schema does not know).
    for crd in operator_crds().values():
        kube.add(crd)
        kube.wait_for(f"{crd['metadata']['name']} established",
                      lambda name=crd["metadata"]["name"]: established(kube, name))
    kube.ensure_namespace("registries")  # the runtime's part is installed, interLink's is not
    done = live_playbook(kube)
    assert done.returncode == 0, done.stdout[-6000:]
    kube.client.resources.invalidate_cache()
    monitors = kube.resource("ServiceMonitor", "monitoring.coreos.com/v1")
    names = {m["metadata"]["name"] for m in monitors.get(namespace="registries").to_dict()["items"]}
    assert names == {"policies-system", "clusters-db-service"}
    assert monitors.get(namespace="interlink").to_dict()["items"] == []
    rule = kube.resource("PrometheusRule", "monitoring.coreos.com/v1").get(
        name="aios", namespace="monitoring").to_dict()
    assert contained(rendered["prometheusrule-aios.yaml"]["spec"], rule["spec"])
    for monitor in monitors.get(namespace="registries").to_dict()["items"]:
        name = monitor["metadata"]["name"]
        assert contained(rendered[f"servicemonitor-{name}.yaml"]["spec"], monitor["spec"]), name
    assert kube.names("ConfigMap", "monitoring") >= {"aios-policy-runtime-dashboard",
                                                     "aios-nunet-plugin-dashboard"}
    # Again: nothing to change.
    again = live_playbook(kube)
    assert again.returncode == 0, again.stdout[-4000:]
    assert re.search(r"localhost\s*:.*changed=0", again.stdout), again.stdout[-2000:]


# --- a real Prometheus scraping a real runtime ------------------------------------------------

PROMETHEUS = shutil.which("prometheus")
POLICY = """class AIOSv1PolicyRule:
    def __init__(self, rule_id, settings, parameters):
        pass

    def eval(self, parameters, input_data, context):
        if input_data.get("fail"):
            raise ValueError("asked to fail")
        return {"allowed": True}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None,
                    reason="prometheus is not installed (Debian package prometheus)")
def test_prometheus_scrapes_the_runtime_and_records(rendered: dict[str, dict],
                                                    runtime: tuple[str, str],
                                                    tmp_path: Path) -> None:
    url, token = runtime
    headers = {"Authorization": f"Bearer {token}"}
    published = httpx.post(f"{url}/policies", headers=headers, timeout=30,
                           json={"name": "monitoring.probe", "version": "v1", "code": POLICY})
    assert published.status_code == 201, published.text
    uri = published.json()["policy_rule_uri"]
    for fail in (False, False, False, True):
        answer = httpx.post(f"{url}/policies/{uri}/eval", headers=headers, timeout=30,
                            json={"input_data": {"fail": fail}})
        assert answer.status_code in (200, 422), answer.text

    # The scrape as the ServiceMonitor of policies-system asks for it.
    monitor = rendered["servicemonitor-policies-system.yaml"]["spec"]["endpoints"][0]
    (token_file := tmp_path / "token").write_text(token)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(write_rules(tmp_path, rule_groups(rendered)))],
        "scrape_configs": [{
            "job_name": "policies-system",
            "metrics_path": monitor["path"],
            "authorization": {"type": "Bearer", "credentials_file": str(token_file)},
            "static_configs": [{"targets": [url.removeprefix("http://")],
                                "labels": {"namespace": "registries"}}],
            "relabel_configs": [{"target_label": r["targetLabel"],
                                 "replacement": r["replacement"]}
                                for r in monitor["relabelings"]],
        }],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        api = f"http://127.0.0.1:{port}/api/v1/query"

        def query(expr: str) -> list[dict]:
            try:
                answer = httpx.get(api, params={"query": expr}, timeout=5)
            except httpx.TransportError:
                return []
            return answer.json()["data"]["result"] if answer.status_code == 200 else []

        def wait(expr: str) -> list[dict]:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                found = query(expr)
                if found:
                    return found
                assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
                time.sleep(0.5)
            log_text = (tmp_path / "prometheus.log").read_text()[-3000:]
            pytest.fail(f"{expr} gave nothing: {log_text}")

        (up,) = wait('up{aios_part="policy-runtime"} == 1')
        assert up["metric"]["job"] == "policies-system"
        # Decisions recorded by outcome, through the recording rule.
        recorded = wait('aios:policy_decisions:rate5m{outcome="ok"}')
        assert recorded[0]["metric"] == {"__name__": "aios:policy_decisions:rate5m",
                                         "namespace": "registries", "job": "policies-system",
                                         "outcome": "ok"}
        failing = wait('aios:policy_decisions:rate5m{outcome!="ok"}')
        assert {r["metric"]["outcome"] for r in failing} == {"PolicyError"}
        assert wait("aios:policy_decision_duration_seconds:p99_rate5m")
        # The runtime is up, so its absence alert stays quiet.
        assert query('ALERTS{alertname="AiosPolicyRuntimeAbsent"}') == []
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
