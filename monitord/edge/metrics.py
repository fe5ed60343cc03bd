"""Every Prometheus metric monitord exports is defined here, and only here."""

from __future__ import annotations

import platform

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from monitord import __version__
from monitord.run.checkstate import CheckState
from monitord.escalation.ladder import GUARDS, Step
from monitord.shared.redact import redact
from monitord.shared.results import Result

CHECK_LABELS = ("host", "check", "kind")
CONTENT_TYPE = CONTENT_TYPE_LATEST

LATENESS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
CLOSE_REASONS = ("idle", "evicted", "refused")

# Prometheus reads no ``_created`` samples from the text format; they only doubled every counter's series.
prometheus_client.disable_created_metrics()


class Metrics:
    """The daemon's metrics, on a registry of their own (so tests can run several daemons)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.probe_success = Gauge(
            "monitord_probe_success", "1 if the last run of the check was OK, else 0.", CHECK_LABELS, registry=r)
        self.probe_duration = Gauge(
            "monitord_probe_duration_seconds", "How long the last run of the check took.", CHECK_LABELS, registry=r)
        self.probe_last_run = Gauge(
            "monitord_probe_last_run_timestamp_seconds", "When the last run of the check started.", CHECK_LABELS,
            registry=r)
        self.probe_status = Gauge(
            "monitord_probe_status", "Status of the last run: 0 ok, 1 warning, 2 critical, 3 unknown.", CHECK_LABELS,
            registry=r)
        self.probe_value = Gauge(
            "monitord_probe_value", "A value measured by the last run (name says which, e.g. rtt_avg_ms).",
            CHECK_LABELS + ("name",), registry=r)
        self.check_state = Gauge(
            "monitord_check_state", "0 ok, 1 soft (unconfirmed) problem, 2 hard (confirmed) problem.", CHECK_LABELS,
            registry=r)
        self.probe_results = Counter(
            "monitord_probe_results", "Probe runs by kind, status and reason.", ("kind", "status", "reason"),
            registry=r)
        self.lateness = Histogram(
            "monitord_scheduler_lateness_seconds", "How late checks started relative to their due time.",
            buckets=LATENESS_BUCKETS, registry=r)
        self.checks_configured = Gauge(
            "monitord_checks_configured", "Enabled checks in the running configuration.", registry=r)
        self.checks_running = Gauge(
            "monitord_checks_running", "Probe runs in progress.", registry=r)
        self.incidents_open = Gauge(
            "monitord_incidents_open", "Incidents (confirmed problems) not yet recovered.", registry=r)
        self.escalation_level = Gauge(
            "monitord_escalation_level", "Current escalation level of a host: 0 none, 1-3 the contract's levels.",
            ("host",), registry=r)
        self.actions = Counter(
            "monitord_actions", "Remediation actions carried out, by kind and outcome.", ("kind", "outcome"),
            registry=r)
        self.guard_blocks = Counter(
            "monitord_guard_blocks", "Actions a safety guard stopped, by guard.", ("guard",), registry=r)
        self.last_action = Gauge(
            "monitord_last_action_timestamp_seconds", "When the last remediation action on a host started.",
            ("host",), registry=r)
        self.escalation_pages = Counter(
            "monitord_escalation_pages", "Pages decided by the escalation engine, by kind.", ("kind",), registry=r)
        self.pages_sent = Counter(
            "monitord_pages_sent", "Page delivery attempts by integration and outcome (delivered, retry, dead).",
            ("integration", "outcome"), registry=r)
        self.page_outbox_depth = Gauge(
            "monitord_page_outbox_depth", "Pages queued in the outbox and not yet delivered or given up.",
            ("integration",), registry=r)
        self.reports_due = Gauge(
            "monitord_reports_due", "Incident reports (障害報告) of recovered incidents not yet submitted and not yet "
            "past their due date (2 business days after recovery).", registry=r)
        self.reports_overdue = Gauge(
            "monitord_reports_overdue", "Incident reports past their due date and not marked submitted.", registry=r)
        self.ack_latency = Histogram(
            "monitord_page_ack_latency_seconds", "From a page being opened to its acknowledgement.",
            buckets=(60, 300, 600, 900, 1800, 3600, 7200), registry=r)
        self.sla_running = Gauge("monitord_sla_timers_running", "SLA timers started and not yet stopped.", registry=r)
        self.sla_breached = Gauge(
            "monitord_sla_timers_breached", "Running SLA timers past their target.", registry=r)
        self.http_connections = Gauge(
            "monitord_http_connections", "Open connections to the HTTP listener (metrics, heartbeats, API).",
            registry=r)
        self.http_closed = Counter(
            "monitord_http_connections_closed", "Connections the HTTP listener closed to protect itself: idle (no "
            "request in time), evicted (idle the longest, to make room at the cap), refused (at the cap, all busy).",
            ("reason",), registry=r)
        self.store_healthy = Gauge(
            "monitord_store_healthy", "1 if the state store can be written; 0 while writes fail (disk full, I/O "
            "error, damage): automatic actions are held.", registry=r)
        self.build_info = Gauge(
            "monitord_build_info", "Always 1; labels carry the version.", ("version", "python"), registry=r)
        self.reload_successful = Gauge(
            "monitord_config_last_reload_successful", "1 if the last configuration (re)load succeeded.", registry=r)
        self.reload_timestamp = Gauge(
            "monitord_config_last_reload_success_timestamp_seconds", "When the configuration last loaded.",
            registry=r)
        self.build_info.labels(__version__, platform.python_version()).set(1)
        # counters of a known set of labels start at 0, so increase() sees their first event
        for step in Step:
            for outcome in ("ok", "failed"):
                self.actions.labels(str(step), outcome)
        for guard in GUARDS:
            self.guard_blocks.labels(guard)
        for reason in CLOSE_REASONS:
            self.http_closed.labels(reason)

    def observe(self, host: str, check: str, kind: str, result: Result, state: CheckState) -> None:
        """Record a finished run and the state it left the check in."""
        labels = (host, check, kind)
        self.probe_success.labels(*labels).set(1 if result.ok else 0)
        self.probe_duration.labels(*labels).set(result.duration)
        self.probe_last_run.labels(*labels).set(result.started_at)
        self.probe_status.labels(*labels).set(int(result.status))
        for name, value in result.values.items():
            self.probe_value.labels(*labels, name).set(value)
        self.check_state.labels(*labels).set(state.level)
        self.probe_results.labels(kind, str(result.status), str(result.reason) or "none").inc()

    def restore(self, host: str, check: str, kind: str, state: CheckState) -> None:
        """Show a check's persisted state right after start-up, before its first run."""
        self.check_state.labels(host, check, kind).set(state.level)
        if state.last_result is not None:
            self.probe_success.labels(host, check, kind).set(1 if state.last_result.ok else 0)
            self.probe_last_run.labels(host, check, kind).set(state.last_result.started_at)

    def forget(self, host: str, check: str, kind: str) -> None:
        """Drop every series of a check that left the configuration."""
        labels = {"host": host, "check": check, "kind": kind}
        for gauge in (self.probe_success, self.probe_duration, self.probe_last_run, self.probe_status,
                      self.probe_value, self.check_state):
            gauge.remove_by_labels(labels)

    def exposition(self) -> bytes:
        """The text exposition format of every metric."""
        return redact(generate_latest(self.registry).decode()).encode()
