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
INSTANCE = 'instance=~"$instance"'


def fleet(metric: str) -> str:
    """``metric`` of the chosen monitord instances."""
    return f"{metric}{{{INSTANCE}}}"


def on_host(metric: str) -> str:
    """``metric`` of the chosen hosts."""
    return f'{metric}{{{INSTANCE}, host=~"$host"}}'


def increase_by(labels: str, metric: str, function: str = "increase", window: str = "$__rate_interval") -> str:
    """A counter's increase (or rate) over ``window``, summed by ``labels``."""
    return f"sum by ({labels}) ({function}({fleet(metric)}[{window}]))"


def quantile(q: float, histogram: str, function: str = "rate", window: str = "$__rate_interval") -> str:
    """The ``q`` quantile of a histogram over ``window``."""
    return f"histogram_quantile({q}, {increase_by('le', histogram + '_bucket', function, window)})"


def query(expr: str, legend: str = "", instant: bool = False, ref: str = "A") -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").datasource(DS).ref_id(ref)
    return q.instant().format("table") if instant else q


def steps(*pairs: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=value, color=color) for value, color in pairs])


def number(title: str, expr: str, description: str, unit: str = "none", red_from: float | None = None,
           red_below: float | None = None, w: int = 4) -> stat.Panel:
    """A single big number: red from ``red_from`` up, or below ``red_below``; blue if neither."""
    if red_from is not None:
        colours = ((None, "green"), (red_from, "red"))
    elif red_below is not None:
        colours = ((None, "red"), (red_below, "green"))
    else:
        colours = ((None, "blue"),)
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
        .query(f"label_values({fleet('monitord_escalation_level')}, host)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True).include_all(True).all_value(".*").sort(VariableSort.ALPHABETICAL_ASC),
    ]


def sections() -> list[tuple[str, list]]:
    """The dashboard's rows, each with its panels."""
    return [
        ("Fleet overview", [
            number("Hosts", f"count({fleet('monitord_escalation_level')})",
                   "Hosts in the running configuration."),
            number("Checks failing", f"count({fleet('monitord_check_state')} == 2) or vector(0)",
                   "Checks with a confirmed (hard) problem.", red_from=1),
            number("Open incidents", f"sum({fleet('monitord_incidents_open')})",
                   "Confirmed problems not yet recovered.", red_from=1),
            number("Hosts at level 3", f"count({fleet('monitord_escalation_level')} == 3) or vector(0)",
                   "On-site dispatch: automatic remediation is exhausted.", red_from=1),
            number("Checks configured", f"sum({fleet('monitord_checks_configured')})",
                   "Enabled checks in the running configuration."),
            number("Checks running", f"sum({fleet('monitord_checks_running')})",
                   "Probe runs in progress now."),
            grid("Problems now", "Every check that is not OK: 1 soft (unconfirmed), 2 hard (confirmed).",
                 f"{fleet('monitord_check_state')} > 0"),
            graph("Escalation level by host", "0 none, 1-3 the contract's levels.",
                  (f"max by (host) ({fleet('monitord_escalation_level')})", "{{host}}")),
        ]),
        ("Host detail ($host)", [
            graph("Check state", "0 ok, 1 soft, 2 hard.",
                  (on_host("monitord_check_state"), "{{host}}/{{check}}"), w=8),
            graph("Probe success", "1 if the last run was OK.",
                  (on_host("monitord_probe_success"), "{{host}}/{{check}}"), w=8),
            graph("Probe duration", "How long the last run took.",
                  (on_host("monitord_probe_duration_seconds"), "{{host}}/{{check}}"), unit="s", w=8),
            grid("Escalation level and last action",
                 "The host's level now, and seconds since its last remediation action (if any since start-up).",
                 f"{on_host('monitord_escalation_level')}"
                 f" or (time() - {on_host('monitord_last_action_timestamp_seconds')})",
                 w=24),
        ]),
        ("Remediation", [
            graph("Actions", "Remediation actions carried out, by kind and outcome.",
                  (increase_by("kind, outcome", "monitord_actions_total"),
                   "{{kind}} {{outcome}}"), stacked=True),
            graph("Guard blocks", "Actions a safety guard stopped (blast_radius: the monitor's own side "
                  "looks broken, so no power actions).",
                  (increase_by("guard", "monitord_guard_blocks_total"),
                   "{{guard}}"), stacked=True),
        ]),
        ("Paging and SLA timers", [
            number("SLA timers running", f"sum({fleet('monitord_sla_timers_running')})",
                   "On-site and replacement timers started and not stopped."),
            number("SLA timers breached", f"sum({fleet('monitord_sla_timers_breached')})",
                   "Running timers past their target.", red_from=1),
            number("Reports due", f"sum({fleet('monitord_reports_due')})",
                   "Incident reports (障害報告) to write, not yet overdue."),
            number("Reports overdue", f"sum({fleet('monitord_reports_overdue')})",
                   "Incident reports past their due date (2 business days after recovery).", red_from=1),
            number("Outbox", f"sum({fleet('monitord_page_outbox_depth')})",
                   "Pages queued and not yet delivered.", red_from=1),
            number("Ack latency p90",
                   quantile(0.9, "monitord_page_ack_latency_seconds", "increase", "1d"),
                   "From a page to its acknowledgement, over the last day.", unit="s"),
            graph("Pages decided", "Pages the escalation engine decided, by kind.",
                  (increase_by("kind", "monitord_escalation_pages_total"),
                   "{{kind}}"), stacked=True, w=8),
            graph("Page deliveries", "Delivery attempts by integration and outcome (delivered, retry, dead).",
                  (increase_by("integration, outcome", "monitord_pages_sent_total"),
                   "{{integration}} {{outcome}}"), stacked=True, w=8),
            graph("Outbox depth", "Pages queued per integration; a line that only grows means pages are "
                  "not leaving.", (fleet("monitord_page_outbox_depth"), "{{integration}}"), w=8),
        ]),
        ("monitord itself", [
            number("Up", 'min(up{job="monitord", instance=~"$instance"})', "Prometheus reaches /metrics.",
                   red_below=1),
            number("State store", f"min({fleet('monitord_store_healthy')})",
                   "1 writable; 0: actions and pages are held.", red_below=1),
            number("Last reload OK", f"min({fleet('monitord_config_last_reload_successful')})",
                   "0: the last config was refused; the previous one runs.", red_below=1),
            number("Config age",
                   f"time() - max({fleet('monitord_config_last_reload_success_timestamp_seconds')})",
                   "Since the configuration last loaded.", unit="s"),
            number("HTTP connections", f"sum({fleet('monitord_http_connections')})",
                   "Open connections to the listener."),
            grid("Version", "monitord and Python versions.",
                 fleet("monitord_build_info"), w=4),
            graph("Scheduler lateness", "How late checks start; high means an overloaded daemon.",
                  (quantile(0.5, "monitord_scheduler_lateness_seconds"), "p50"),
                  (quantile(0.99, "monitord_scheduler_lateness_seconds"), "p99"),
                  unit="s", w=8),
            graph("Stalest check by kind", "Seconds since the check of each kind that ran least recently last "
                  "started; above the kind's interval (plus its timeout) means checks are not running.",
                  (f"time() - min by (kind) ({fleet('monitord_probe_oldest_run_timestamp_seconds')})", "{{kind}}"),
                  unit="s", w=8),
            graph("Probe results", "Probe runs per second by kind, status and reason.",
                  (increase_by("kind, status, reason", "monitord_probe_results_total", "rate"),
                   "{{kind}} {{status}} {{reason}}"), unit="ops", w=8),
            graph("Listener self-protection", "Connections the listener closed: idle, evicted, refused.",
                  (increase_by("reason", "monitord_http_connections_closed_total"),
                   "{{reason}}"), stacked=True, w=8),
            graph("Alertmanager alerts without a check", "Alerts Alertmanager posted that no alertmanager check "
                  "takes: add a check, fix its matchers, or route them elsewhere.",
                  (increase_by("instance", "monitord_alertmanager_alerts_unmatched_total"), "{{instance}}"), w=8),
        ]),
    ]


def build() -> dashboard.Dashboard:
    d = (dashboard.Dashboard("monitord — fleet, remediation, paging").uid(UID).tags(["monitord", "noc"])
         .description("What monitord sees, what it is doing about it, and whether it is healthy itself.")
         .refresh("30s").time("now-6h", "now").timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR)
         .editable())
    for variable in variables():
        d = d.with_variable(variable)

    for title, panels in sections():
        d = d.with_row(dashboard.Row(title))
        for panel in panels:
            d = d.with_panel(panel)
    return d


def render() -> str:
    """The dashboard's JSON text, as committed."""
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
