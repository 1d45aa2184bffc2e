"""Generate the monitoring role's Grafana dashboards (roles/monitoring/files/dashboards/*.json).

The dashboards are code: this script builds them with grafana-foundation-sdk and writes one
JSON file per dashboard; the monitoring role ships each as a ConfigMap labelled
``grafana_dashboard: "1"``. ``python scripts/dashboards.py`` writes the files, ``--check``
fails (listing them) when any is missing, stale or not generated from here.

Every panel queries a metric that the code exports (policy_runtime/.../metrics.py,
interlink_nunet/.../metrics.py) or a recording rule of the role's PrometheusRule.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "roles" / "monitoring" / "files" / "dashboards"

# Every panel asks the data source picked in the dashboard's `datasource` variable.
_DS = DataSourceRef(type_val="prometheus", uid="${datasource}")


def _query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)


def _series(title: str, unit: str, *queries: tuple[str, str], description: str = "",
            width: int = 12) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).unit(unit).datasource(_DS).span(width).height(8)
             .description(description))
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(_query(expr, legend, ref))
    return panel


def _stat(title: str, unit: str, expr: str, legend: str, description: str = "") -> stat.Panel:
    return (stat.Panel().title(title).unit(unit).datasource(_DS).span(6).height(4)
            .description(description).with_target(_query(expr, legend)))


def _base(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title).uid(uid).description(description).tags(["aios"])
        .refresh("1m").time("now-6h", "now").timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source")
                       .type("prometheus"))
    )


def _rate(metric: str, sel: str, by: str = "", window: str = "5m", fn: str = "rate") -> str:
    """``sum [by (...)] (fn(metric{sel}[window]))``."""
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({fn}({metric}{{{sel}}}[{window}]))"


def _variable(name: str, label: str, query: str) -> dashboard.QueryVariable:
    return (dashboard.QueryVariable(name).label(label).datasource(_DS).query(query)
            .multi(True).include_all(True))


def policy_runtime() -> dashboard.Dashboard:
    sel = 'namespace=~"$namespace", job=~"$job"'
    decisions = "aios_policy_decisions_total"
    latency = "aios_policy_decision_duration_seconds"
    governed = "aios_governance_decisions_total"
    remote = "aios_remote_execution_duration_seconds"
    failing = _rate(decisions, sel + ', outcome!="ok"')
    return (
        _base("aios-policy-runtime", "AIOS / Policy runtime",
              "Decisions, latency, sandbox workers, governed actions, stability and remote "
              "execution of the policy runtime's services.")
        .with_variable(_variable("namespace", "Namespace", f"label_values({decisions}, namespace)"))
        .with_variable(_variable("job", "Service",
                                 f'label_values({decisions}{{namespace=~"$namespace"}}, job)'))
        .with_row(dashboard.Row("Overview"))
        .with_panel(_stat("Decisions / s", "reqps", _rate(decisions, sel), "decisions"))
        .with_panel(_stat("Failing decisions", "percentunit",
                          f"{failing} / {_rate(decisions, sel)}",
                          "failing",
                          "Share of evaluations that did not end ok (timeouts, memory limits, "
                          "policy errors); governance fails closed on them."))
        .with_panel(_stat("Decision latency p99", "s",
                          f"max(aios:policy_decision_duration_seconds:p99_rate5m{{{sel}}})", "p99"))
        .with_panel(_stat("Runtime targets up", "none",
                          f'sum(up{{{sel}, aios_part="policy-runtime"}})', "up"))
        .with_panel(_stat("Replicas reaching their database", "none",
                          f"sum(aios_database_up{{{sel}}})", "reachable",
                          "Replicas whose database answers its pings; the others answer "
                          "/healthz with 503."))
        .with_panel(_stat("Unstable clusters", "none",
                          f"max(aios_unstable_clusters{{{sel}}})", "unstable",
                          "Clusters whose latest stability check said not stable."))
        .with_panel(_stat("Clusters in the registry", "none",
                          f"max(aios_registry_clusters{{{sel}}})", "clusters",
                          "Cluster documents in the clusters registry (clusters-db-service)."))
        .with_row(dashboard.Row("Decisions"))
        .with_panel(_series("Decisions by outcome", "reqps",
                            (_rate(decisions, sel, "outcome"), "{{outcome}}"),
                            description="ok, or the error type of the evaluation."))
        .with_panel(_series("Decisions by service", "reqps",
                            (_rate(decisions, sel, "namespace, job, outcome"),
                             "{{job}} {{outcome}}")))
        .with_row(dashboard.Row("Latency"))
        .with_panel(_series("Decision latency quantiles", "s",
                            *[(f"histogram_quantile({q}, {_rate(latency + '_bucket', sel, 'le')})",
                               f"p{round(q * 100)}") for q in (0.5, 0.9, 0.99)],
                            description="Wall time of one evaluation, sandbox round trip "
                                        "included."))
        .with_panel(_series("Mean decision latency", "s",
                            (f"{_rate(latency + '_sum', sel, 'job')}"
                             f" / {_rate(latency + '_count', sel, 'job')}", "{{job}}")))
        .with_row(dashboard.Row("Sandbox workers"))
        .with_panel(_series("Worker kills and respawns by reason", "short",
                            (_rate("aios_sandbox_worker_restarts_total", sel, "reason", "15m",
                                   "increase"), "{{reason}}"),
                            description="Workers killed and replaced in 15 minutes: recycle is "
                                        "routine, timeout, crash and memory limits are not."))
        .with_row(dashboard.Row("Governed actions"))
        .with_panel(_series("Governed actions by action and outcome", "reqps",
                            (_rate(governed, sel, "action, decision, outcome"),
                             "{{action}} {{decision}} ({{outcome}})"),
                            description="Pre-check decisions: what the action got (allowed or "
                                        "denied) and what its policy said; policy_failed "
                                        "means governance failed closed."))
        .with_panel(_series("Governed actions by cluster", "reqps",
                            (_rate("aios_governance_cluster_decisions_total", sel,
                                   "cluster_id, decision"), "{{cluster_id}} {{decision}}"),
                            description="Per cluster for the first AIOS_METRICS_MAX_CLUSTERS "
                                        "clusters; the others are summed as \"other\"."))
        .with_row(dashboard.Row("Stability"))
        .with_panel(_series("Cluster stability", "short",
                            (f"aios_cluster_stable{{{sel}}}", "{{cluster_id}}"),
                            description="1 when the cluster's latest stability check said "
                                        "stable."))
        .with_panel(_series("Stability checks by outcome", "short",
                            (_rate("aios_stability_checks_total", sel, "outcome", "15m",
                                   "increase"), "{{outcome}}"),
                            description="Checks in 15 minutes: failed means the policy could "
                                        "not say, and the cluster counts as not stable."))
        .with_panel(_series("Age of the latest stability check", "s",
                            (f"time() - max by (job) "
                             f"(aios_stability_last_check_timestamp_seconds{{{sel}}})", "{{job}}"),
                            (f"max by (job) (aios_stability_interval_seconds{{{sel}}})",
                             "{{job}} interval"),
                            description="Seconds since a replica last ran a check, beside the "
                                        "checker's interval (0 while it has no policy or is "
                                        "paused)."))
        .with_row(dashboard.Row("Remote execution"))
        .with_panel(_series("Remote executions by outcome", "reqps",
                            (_rate("aios_remote_executions_total", sel, "outcome"),
                             "{{outcome}}"),
                            description="Policies run on a remote executor through the "
                                        "policies system: unreachable, bad_answer and "
                                        "not_configured got no result."))
        .with_panel(_series("Remote execution latency p99", "s",
                            (f"histogram_quantile(0.99, {_rate(remote + '_bucket', sel, 'le')})",
                             "p99")))
    )


def nunet_plugin() -> dashboard.Dashboard:
    sel = 'namespace=~"$namespace"'
    dms_buckets = _rate("nunet_plugin_dms_request_seconds_bucket", sel, "operation, le")
    return (
        _base("aios-nunet-plugin", "AIOS / NuNet plugin",
              "Capacity, jobs and DMS calls of the NuNet interLink plugin.")
        .with_variable(_variable("namespace", "Namespace",
                                 "label_values(nunet_plugin_mapped_jobs, namespace)"))
        .with_row(dashboard.Row("Overview"))
        .with_panel(_stat("Jobs running", "none",
                          f"sum(nunet_plugin_mapped_jobs{{{sel}}})", "jobs"))
        .with_panel(_stat("Pending cancels", "none",
                          f"sum(nunet_plugin_pending_cancels{{{sel}}})", "pending"))
        .with_panel(_stat("Resources age", "s",
                          f"max(nunet_plugin_resources_age_seconds{{{sel}}})", "age",
                          "Seconds since DMS last answered the peers dump (-1 before the first)."))
        .with_panel(_stat("Plugin up", "none", f'sum(up{{{sel}, aios_part="nunet-plugin"}})', "up"))
        .with_row(dashboard.Row("Capacity"))
        .with_panel(_series("GPUs by kind: capacity and allocatable", "short",
                            (f'nunet_plugin_capacity{{{sel}, resource=~"gpu[.].*"}}',
                             "{{resource}} capacity"),
                            (f'nunet_plugin_allocatable{{{sel}, resource=~"gpu[.].*"}}',
                             "{{resource}} allocatable"),
                            description="Cards of each kind the peers have (capacity) and "
                            "those available to new jobs (allocatable)."))
        .with_panel(_series("CPU and memory: capacity and allocatable", "short",
                            (f'nunet_plugin_capacity{{{sel}, resource!~"gpu[.].*"}}',
                             "{{resource}} capacity"),
                            (f'nunet_plugin_allocatable{{{sel}, resource!~"gpu[.].*"}}',
                             "{{resource}} allocatable")))
        .with_row(dashboard.Row("Jobs"))
        .with_panel(_series("Jobs created and deleted", "short",
                            (_rate("nunet_plugin_jobs_created_total", sel, "", "15m", "increase"),
                             "created"),
                            (_rate("nunet_plugin_jobs_deleted_total", sel, "", "15m", "increase"),
                             "deleted"),
                            (f"sum(nunet_plugin_mapped_jobs{{{sel}}})", "running")))
        .with_panel(_series("Requests by route and status", "reqps",
                            (_rate("nunet_plugin_requests_total", sel, "route, status"),
                             "{{route}} {{status}}")))
        .with_row(dashboard.Row("DMS"))
        .with_panel(_series("DMS errors by operation", "short",
                            (_rate("nunet_plugin_dms_errors_total", sel, "operation", "15m",
                                   "increase"), "{{operation}}")))
        .with_panel(_series("DMS call latency p99", "s",
                            (f"histogram_quantile(0.99, {dms_buckets})",
                             "{{operation}}")))
    )


DASHBOARDS = {"aios-policy-runtime": policy_runtime, "aios-nunet-plugin": nunet_plugin}


def as_json(board: dashboard.Dashboard) -> str:
    """The dashboard's JSON, every panel with an id of its own (links to a panel use it)."""
    model = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    for number, panel in enumerate(model["panels"], start=1):
        panel["id"] = number
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def rendered() -> dict[Path, str]:
    """Each dashboard file and its content."""
    return {OUT / f"{name}.json": as_json(build()) for name, build in DASHBOARDS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a file is missing or stale")
    args = parser.parse_args()
    files = rendered()
    if args.check:
        expected = set(files)
        present = set(OUT.glob("*.json")) if OUT.is_dir() else set()
        stale = sorted(str(p.relative_to(REPO)) for p, text in files.items()
                       if not p.is_file() or p.read_text() != text)
        stale += sorted(str(p.relative_to(REPO)) for p in present - expected)
        if stale:
            print("out of date, run `python scripts/dashboards.py`: " + ", ".join(stale),
                  file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for path in set(OUT.glob("*.json")) - set(files):
        path.unlink()
    for path, text in files.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
