"""Every Prometheus metric monitord exports is defined here, and only here."""

from __future__ import annotations

import math
import platform
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

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


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


@dataclass(slots=True)
class _Check:
    """What the exposition shows of one check: its label text (made once) and its last figures."""

    labels: str
    host: str
    kind: str
    success: float | None = None
    duration: float | None = None
    state: int = 0
    status: int | None = None
    last_run: float | None = None
    values: Mapping[str, float] = field(default_factory=dict)


class CheckFamily:
    """A gauge with one series per check (labels host, check, kind; ``values``: one per value name).

    Described in the registry like any metric, but its samples are rendered by
    :meth:`Metrics.exposition` straight from the checks' rows: no child object per check.
    ``detail`` families appear only in a per-host scrape (``/metrics?host=...``).
    """

    def __init__(self, name: str, documentation: str, attribute: str, *, registry: CollectorRegistry,
                 detail: bool = False) -> None:
        self.name, self.documentation, self.attribute, self.detail = name, documentation, attribute, detail
        self._labelnames = CHECK_LABELS + (("name",) if attribute == "values" else ())
        registry.register(self)

    def describe(self) -> list[Metric]:
        return [Metric(self.name, self.documentation, "gauge")]

    def collect(self) -> list[Metric]:
        return []  # rendered by Metrics.exposition

    def render(self, rows: list[_Check]) -> str:
        """The family's text: HELP, TYPE and a line per check that has the figure."""
        name, attribute = self.name, self.attribute
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines = [f"# HELP {name} {doc}\n# TYPE {name} gauge\n"]
        if attribute == "values":
            lines.extend(f'{name}{{{row.labels},name="{_escape(key)}"}} {floatToGoString(value)}\n'
                         for row in rows for key, value in row.values.items())
        else:
            for row in rows:
                value = getattr(row, attribute)
                if value is not None:
                    lines.append(f"{name}{{{row.labels}}} {floatToGoString(value)}\n")
        return "".join(lines)


class Metrics:
    """The daemon's metrics, on a registry of their own (so tests can run several daemons)."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.probe_success = CheckFamily(
            "monitord_probe_success", "1 if the last run of the check was OK, else 0.", "success", registry=r)
        self.probe_duration = CheckFamily(
            "monitord_probe_duration_seconds", "How long the last run of the check took.", "duration", registry=r)
        self.check_state = CheckFamily(
            "monitord_check_state", "0 ok, 1 soft (unconfirmed) problem, 2 hard (confirmed) problem.", "state",
            registry=r)
        self.probe_status = CheckFamily(
            "monitord_probe_status", "Status of the last run: 0 ok, 1 warning, 2 critical, 3 unknown.", "status",
            registry=r, detail=True)
        self.probe_last_run = CheckFamily(
            "monitord_probe_last_run_timestamp_seconds", "When the last run of the check started.", "last_run",
            registry=r, detail=True)
        self.probe_value = CheckFamily(
            "monitord_probe_value", "A value measured by the last run (name says which, e.g. rtt_avg_ms).", "values",
            registry=r, detail=True)
        self.oldest_run = Gauge(
            "monitord_probe_oldest_run_timestamp_seconds", "When the check of this kind that ran least recently "
            "last started (time() minus it: how stale the stalest check is).", ("kind",), registry=r)
        self.probe_results = Counter(
            "monitord_probe_results", "Probe runs by kind, status and reason.", ("kind", "status", "reason"),
            registry=r)
        self.lateness = Histogram(
            "monitord_scheduler_lateness_seconds", "How late checks of the kind started relative to their due time.",
            ("kind",), buckets=LATENESS_BUCKETS, registry=r)
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
        self.alertmanager_unmatched = Counter(
            "monitord_alertmanager_alerts_unmatched", "Alerts Alertmanager posted that matched no alertmanager check.",
            registry=r)
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
        self._families = [self.probe_success, self.probe_duration, self.check_state, self.probe_status,
                          self.probe_last_run, self.probe_value]
        self._checks: dict[tuple[str, str, str], _Check] = {}
        self._fleet_scrape = threading.Lock()
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
        row = self._row(host, check, kind)
        row.success = 1.0 if result.ok else 0.0
        row.duration = result.duration
        row.state = state.level
        row.status = int(result.status)
        row.last_run = result.started_at
        row.values = result.values
        self.probe_results.labels(kind, str(result.status), str(result.reason) or "none").inc()

    def restore(self, host: str, check: str, kind: str, state: CheckState) -> None:
        """Show a check's persisted state right after start-up, before its first run."""
        row = self._row(host, check, kind)
        row.state = state.level
        if state.last_result is not None:
            row.success = 1.0 if state.last_result.ok else 0.0
            row.last_run = state.last_result.started_at

    def forget(self, host: str, check: str, kind: str) -> None:
        """Drop every series of a check that left the configuration."""
        self._checks.pop((host, check, kind), None)

    def check(self, host: str, check: str, kind: str) -> _Check | None:
        """What the exposition shows of a check, or None if it has no series."""
        return self._checks.get((host, check, kind))

    def _row(self, host: str, check: str, kind: str) -> _Check:
        row = self._checks.get((host, check, kind))
        if row is None:
            row = self._checks[(host, check, kind)] = _Check(
                f'check="{_escape(check)}",host="{_escape(host)}",kind="{_escape(kind)}"', host, kind)
        return row

    def exposition(self, hosts: Collection[str] | None = None) -> bytes:
        """The text exposition format: every metric, with the three series of each check; or, for
        ``hosts`` (a per-host scrape, like blackbox's ``/probe``), only their checks' series, in detail.

        Reads a snapshot of the checks and takes no lock the event loop waits on, so it can run
        in a thread while the loop goes on recording results.
        """
        rows = list(self._checks.values())  # one C-level copy: safe against the loop adding checks meanwhile
        if hosts is None:
            oldest: dict[str, float] = {}
            for row in rows:
                if row.last_run is not None and row.last_run < oldest.get(row.kind, math.inf):
                    oldest[row.kind] = row.last_run
            with self._fleet_scrape:  # two scrapes at once: neither sees the other's half-set gauge
                self.oldest_run.clear()
                for kind, when in oldest.items():
                    self.oldest_run.labels(kind).set(when)
                head = generate_latest(self.registry).decode()
            families = [f for f in self._families if not f.detail]
        else:
            wanted = set(hosts)
            rows = [row for row in rows if row.host in wanted]
            head, families = "", self._families
        return redact(head + "".join(family.render(rows) for family in families)).encode()
