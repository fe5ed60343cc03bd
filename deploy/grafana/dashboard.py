#!/usr/bin/env python3
"""The monitord Grafana dashboard, built with grafana-foundation-sdk.

    deploy/grafana/dashboard.py > deploy/grafana/monitord.json

A test checks that the committed JSON is this script's output, and evaluates every query in it
against a real Prometheus scraping a daemon (tests/test_noc_live.py). Queries use the
variables $instance and $host (both multi-value, regex-matched) and Grafana's $__rate_interval.
"""

from __future__ import annotations

import json
import sys

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.models.common import GraphDrawStyle, StackingMode
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync, DataSourceRef, Threshold, ThresholdsMode, VariableRefresh, VariableSort)

UID = "monitord-noc"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
I = 'instance=~"$instance"'  # noqa: E741 - reads as the selector it is
H = f'{I}, host=~"$host"'


def query(expr: str, legend: str = "", instant: bool = False, ref: str = "A") -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").datasource(DS).ref_id(ref)
    return q.instant().format("table") if instant else q


def steps(*pairs: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=value, color=color) for value, color in pairs])


def number(title: str, expr: str, description: str, bad: float | None = None, unit: str = "none",
           good_below: bool = True, w: int = 4) -> stat.Panel:
    """A single big number, red from ``bad`` on (or below it when ``good_below`` is False)."""
    colours = (((None, "green"), (bad, "red")) if good_below else ((None, "red"), (bad, "green"))) \
        if bad is not None else ((None, "blue"),)
    return (stat.Panel().title(title).description(description).datasource(DS).with_target(query(expr))
            .unit(unit).thresholds(steps(*colours)).height(4).span(w))


def graph(title: str, description: str, *targets: tuple[str, str], unit: str = "none", w: int = 12,
          stacked: bool = False) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).description(description).datasource(DS).unit(unit).height(8).span(w)
    if stacked:
        panel = panel.draw_style(GraphDrawStyle.BARS).stacking(common.StackingConfig().mode(StackingMode.NORMAL))
    for ref, (expr, legend) in zip("ABCDEFGH", targets):
        panel = panel.with_target(query(expr, legend, ref=ref))
    return panel


def grid(title: str, description: str, expr: str, w: int = 12) -> table.Panel:
    return (table.Panel().title(title).description(description).datasource(DS)
            .with_target(query(expr, instant=True)).height(8).span(w))


def variables() -> list:
    return [
        dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        dashboard.QueryVariable("instance").label("monitord").datasource(DS)
        .query("label_values(monitord_build_info, instance)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True).include_all(True).all_value(".*").sort(VariableSort.ALPHABETICAL_ASC),
        dashboard.QueryVariable("host").label("Host").datasource(DS)
        .query(f"label_values(monitord_escalation_level{{{I}}}, host)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True).include_all(True).all_value(".*").sort(VariableSort.ALPHABETICAL_ASC),
    ]


def build() -> dashboard.Dashboard:
    d = (dashboard.Dashboard("monitord — fleet, remediation, paging").uid(UID).tags(["monitord", "noc"])
         .description("What monitord sees, what it is doing about it, and whether it is healthy itself.")
         .refresh("30s").time("now-6h", "now").timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR)
         .editable())
    for variable in variables():
        d = d.with_variable(variable)

    d = d.with_row(dashboard.Row("Fleet overview"))
    d = d.with_panel(number("Hosts", f"count(monitord_escalation_level{{{I}}})", "Hosts in the running configuration."))
    d = d.with_panel(number("Checks failing", f"count(monitord_check_state{{{I}}} == 2) or vector(0)",
                            "Checks with a confirmed (hard) problem.", bad=1))
    d = d.with_panel(number("Open incidents", f"sum(monitord_incidents_open{{{I}}})",
                            "Confirmed problems not yet recovered.", bad=1))
    d = d.with_panel(number("Hosts at level 3", f"count(monitord_escalation_level{{{I}}} == 3) or vector(0)",
                            "On-site dispatch: automatic remediation is exhausted.", bad=1))
    d = d.with_panel(number("Checks configured", f"sum(monitord_checks_configured{{{I}}})",
                            "Enabled checks in the running configuration."))
    d = d.with_panel(number("Checks running", f"sum(monitord_checks_running{{{I}}})", "Probe runs in progress now."))
    d = d.with_panel(grid("Problems now", "Every check that is not OK: 1 soft (unconfirmed), 2 hard (confirmed).",
                          f"monitord_check_state{{{I}}} > 0"))
    d = d.with_panel(graph("Escalation level by host", "0 none, 1-3 the contract's levels.",
                           (f"max by (host) (monitord_escalation_level{{{I}}})", "{{host}}")))

    d = d.with_row(dashboard.Row("Host detail ($host)"))
    d = d.with_panel(graph("Check state", "0 ok, 1 soft, 2 hard.", (f"monitord_check_state{{{H}}}", "{{host}}/{{check}}"),
                           w=8))
    d = d.with_panel(graph("Probe status", "0 ok, 1 warning, 2 critical, 3 unknown.",
                           (f"monitord_probe_status{{{H}}}", "{{host}}/{{check}}"), w=8))
    d = d.with_panel(graph("Probe success", "1 if the last run was OK.",
                           (f"monitord_probe_success{{{H}}}", "{{host}}/{{check}}"), w=8))
    d = d.with_panel(graph("Probe duration", "How long the last run took.",
                           (f"monitord_probe_duration_seconds{{{H}}}", "{{host}}/{{check}}"), unit="s", w=8))
    d = d.with_panel(graph("Measured values", "Values the probes measured (rtt, loss, disk %, certificate days...).",
                           (f"monitord_probe_value{{{H}}}", "{{host}}/{{check}} {{name}}"), w=8))
    d = d.with_panel(grid("Since the last run", "Seconds since each check last started.",
                          f"time() - monitord_probe_last_run_timestamp_seconds{{{H}}}", w=8))
    d = d.with_panel(grid("Escalation level and last action",
                          "The host's level now, and seconds since its last remediation action (if any since start-up).",
                          f"monitord_escalation_level{{{H}}} or (time() - monitord_last_action_timestamp_seconds{{{H}}})",
                          w=24))

    d = d.with_row(dashboard.Row("Remediation"))
    d = d.with_panel(graph("Actions", "Remediation actions carried out, by kind and outcome.",
                           (f"sum by (kind, outcome) (increase(monitord_actions_total{{{I}}}[$__rate_interval]))",
                            "{{kind}} {{outcome}}"), stacked=True))
    d = d.with_panel(graph("Guard blocks", "Actions a safety guard stopped (blast_radius: the monitor's own side "
                           "looks broken, so no power actions).",
                           (f"sum by (guard) (increase(monitord_guard_blocks_total{{{I}}}[$__rate_interval]))",
                            "{{guard}}"), stacked=True))

    d = d.with_row(dashboard.Row("Paging and SLA timers"))
    d = d.with_panel(number("SLA timers running", f"sum(monitord_sla_timers_running{{{I}}})",
                            "On-site and replacement timers started and not stopped."))
    d = d.with_panel(number("SLA timers breached", f"sum(monitord_sla_timers_breached{{{I}}})",
                            "Running timers past their target.", bad=1))
    d = d.with_panel(number("Reports due", f"sum(monitord_reports_due{{{I}}})",
                            "Incident reports (障害報告) to write, not yet overdue."))
    d = d.with_panel(number("Reports overdue", f"sum(monitord_reports_overdue{{{I}}})",
                            "Incident reports past their due date (2 business days after recovery).", bad=1))
    d = d.with_panel(number("Outbox", f"sum(monitord_page_outbox_depth{{{I}}})",
                            "Pages queued and not yet delivered.", bad=1))
    d = d.with_panel(number("Ack latency p90",
                            f"histogram_quantile(0.9, sum by (le) (increase(monitord_page_ack_latency_seconds_bucket{{{I}}}[1d])))",
                            "From a page to its acknowledgement, over the last day.", unit="s"))
    d = d.with_panel(graph("Pages decided", "Pages the escalation engine decided, by kind.",
                           (f"sum by (kind) (increase(monitord_escalation_pages_total{{{I}}}[$__rate_interval]))",
                            "{{kind}}"), stacked=True, w=8))
    d = d.with_panel(graph("Page deliveries", "Delivery attempts by integration and outcome (delivered, retry, dead).",
                           (f"sum by (integration, outcome) (increase(monitord_pages_sent_total{{{I}}}[$__rate_interval]))",
                            "{{integration}} {{outcome}}"), stacked=True, w=8))
    d = d.with_panel(graph("Outbox depth", "Pages queued per integration; a line that only grows means pages are "
                           "not leaving.", (f"monitord_page_outbox_depth{{{I}}}", "{{integration}}"), w=8))

    d = d.with_row(dashboard.Row("monitord itself"))
    d = d.with_panel(number("Up", 'min(up{job="monitord", instance=~"$instance"})', "Prometheus reaches /metrics.",
                            bad=1, good_below=False))
    d = d.with_panel(number("State store", f"min(monitord_store_healthy{{{I}}})",
                            "1 writable; 0: actions and pages are held.", bad=1, good_below=False))
    d = d.with_panel(number("Last reload OK", f"min(monitord_config_last_reload_successful{{{I}}})",
                            "0: the last config was refused; the previous one runs.", bad=1, good_below=False))
    d = d.with_panel(number("Config age", f"time() - max(monitord_config_last_reload_success_timestamp_seconds{{{I}}})",
                            "Since the configuration last loaded.", unit="s"))
    d = d.with_panel(number("HTTP connections", f"sum(monitord_http_connections{{{I}}})",
                            "Open connections to the listener."))
    d = d.with_panel(grid("Version", "monitord and Python versions.",
                          f"monitord_build_info{{{I}}}", w=4))
    d = d.with_panel(graph("Scheduler lateness", "How late checks start; high means an overloaded daemon.",
                           (f"histogram_quantile(0.5, sum by (le) (rate(monitord_scheduler_lateness_seconds_bucket{{{I}}}[$__rate_interval])))", "p50"),
                           (f"histogram_quantile(0.99, sum by (le) (rate(monitord_scheduler_lateness_seconds_bucket{{{I}}}[$__rate_interval])))", "p99"),
                           unit="s", w=8))
    d = d.with_panel(graph("Probe results", "Probe runs per second by kind, status and reason.",
                           (f"sum by (kind, status, reason) (rate(monitord_probe_results_total{{{I}}}[$__rate_interval]))",
                            "{{kind}} {{status}} {{reason}}"), unit="ops", w=8))
    d = d.with_panel(graph("Listener self-protection", "Connections the listener closed: idle, evicted, refused.",
                           (f"sum by (reason) (increase(monitord_http_connections_closed_total{{{I}}}[$__rate_interval]))",
                            "{{reason}}"), stacked=True, w=8))
    return d


def render() -> str:
    """The dashboard's JSON text, as committed."""
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
