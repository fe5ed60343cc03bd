"""Incident reports (障害報告), drafted from the journal.

Contract 002 (障害報告): "障害報告は、障害復旧後 2 営業日以内に提出いたします". A report is
due at the end of business hours on the 2nd business day (``paging.sla.report_due``) after the local date of recovery
(:meth:`BusinessCalendar.add_business_days`), and is overdue once that moment has passed
while the report is not marked submitted (``monitord report submit``). Overdue is judged
against the submitted mark rather than the due date alone: otherwise every past incident
would count as overdue forever and the metric could never go back to zero.

What a report is built from (:func:`incident_entries`, the only place that decides it), by
incident id, never by a time window:

1. every journal entry carrying the incident's id: the scheduler's ``confirmed``,
   ``changed``, ``recovered``; the engine's decisions, outcomes, pages, SLA timers (a ladder
   started by the periodic re-evaluation carries its check's incident); acknowledgements;
   the CLI's acts on the host while the incident is open (approvals, quarantine and
   release, maintenance: :func:`monitord.records.store.incident_of_host` names it when they are
   journaled);
2. the soft detection that began it: the scheduler writes ``detected`` before the incident
   exists, so it cannot carry the id; it is the incident's check's ``detected`` entry
   journaled at the incident's own ``detected_at`` (the first failed probe, recorded on the
   incident when it opened). This is the one entry without an id a report takes, marked as
   such in the report's source line;
3. nothing else: entries of other incidents or other hosts, another check's soft problem,
   entries with no host at all (daemon start/stop, the fleet-wide blast-radius page: the
   host's own ``blocked`` entry says why it was held), and entries journaled without an id
   by older versions (CLI acts, ladders re-evaluated before they kept their incident). The
   report's own bookkeeping (``report`` events) is left out.

Durations are measured from the first failed probe (``incidents.detected_at``); the outage
may have begun up to one check interval earlier, which no journal can know.

Rendering (:func:`render`): Jinja2 templates shipped as package data in
``monitord/templates/report/``: ``body.j2`` is the report's structure, the same in every
variant; ``markup.md.j2`` / ``markup.html.j2`` put its blocks into Markdown or HTML;
``report.md.j2`` / ``report.html.j2`` are the documents; ``words.ja.json`` /
``words.en.json`` hold every word (Japanese is the default). HTML is rendered with
autoescape on, so a check summary cannot inject markup; Markdown with autoescape off, its
headings and cells kept to one line with ``|`` escaped so a value cannot break a table. Free
text from the journal (reasons, findings) is shown as journaled, in English.
"""

from __future__ import annotations

import datetime as dt
import functools
import html
import json
import zoneinfo
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, Sequence

import jinja2
import markupsafe

from monitord.shared.lastbackup import LastBackup, format_size
from monitord.paging.oncall import SlaTargets
from monitord.records.events import JournalEvent
from monitord.records.store import Incident, JournalEntry, ReportRecord, Store

DUE_BUSINESS_DAYS = SlaTargets().report_due  # 障害復旧後 2 営業日以内 (contract 002): the config's default
DEFAULT_ZONE = "Asia/Tokyo"
FORMATS = ("md", "html")
LANGS = ("ja", "en")

DESTRUCTIVE_STEPS = frozenset({"power_reset", "power_cycle", "fsck", "service_restart"})
CHECK_EVENTS = frozenset({JournalEvent.DETECTED, JournalEvent.CONFIRMED, JournalEvent.CHANGED,
                          JournalEvent.SOFT_RECOVERY, JournalEvent.RECOVERED, JournalEvent.WITHDRAWN})
HIDDEN_EVENTS = frozenset({JournalEvent.REPORT})
ACK_EVENTS = frozenset({JournalEvent.ACK})  # what is written, nothing else
SLA_STOP_EVENTS = frozenset({JournalEvent.SLA_STOPPED})
_SCAN = 1_000_000  # journal rows per query when gathering a report's entries


class HostCalendar(Protocol):
    """The part of :class:`monitord.paging.business_calendar.BusinessCalendar` reports need."""

    zone: dt.tzinfo

    def add_business_days(self, when: float, n: int) -> dt.datetime:
        """End of business hours on the ``n``-th business day after ``when``'s local date."""


class DueCalendar(Protocol):
    """What reports need of the calendars: the one that applies to a host (its contract's)."""

    def for_host(self, host: str | None) -> HostCalendar:
        """The business calendar of ``host``."""


# -- the report's data ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    """One decided action and what came of it."""

    step: str
    level: int | None
    decided_at: float
    why: str
    finished_at: float | None = None
    outcome: str | None = None  # "ok", "failed", or None when no outcome was journaled
    failure: str | None = None  # the outcome's reason (timeout, auth...)
    detail: str = ""  # what the outcome found, one line


@dataclass(frozen=True, slots=True)
class PageRecord:
    """A page to on-call staff and its acknowledgement, if one was journaled."""

    at: float
    kind: str
    level: int | None
    summary: str
    acked_at: float | None = None
    acked_by: str | None = None


@dataclass(frozen=True, slots=True)
class SlaResult:
    """An SLA timer (e.g. engineer on site, ``paging.sla``) and whether it was met.

    ``status``: ``met`` / ``breached`` (a stop event at or before / after ``due``, or a breach
    event), ``running`` (the incident is still open), ``no_record`` (closed, no stop journaled).
    """

    name: str
    started_at: float
    due: float | None
    stopped_at: float | None
    status: str


@dataclass(frozen=True, slots=True)
class BmcFinding:
    """What a BMC read found (power state, SEL events, sensors), or why it failed."""

    at: float
    ok: bool
    text: str


@dataclass(frozen=True, slots=True)
class Durations:
    """Seconds from the first failed probe (``incidents.detected_at``); None when it did not happen."""

    to_detect: float | None  # until the problem was confirmed (the incident opened)
    to_first_action: float | None  # until the first destructive action was decided
    to_recovery: float | None  # until the incident closed


@dataclass(frozen=True, slots=True)
class Report:
    """Everything an incident report says, before it is put into words."""

    incident: Incident
    zone: dt.tzinfo
    entries: tuple[JournalEntry, ...]  # the timeline (hidden events removed)
    host_level: frozenset[int]  # ids of entries included by host and time, not by incident id
    actions: tuple[Action, ...]
    pages: tuple[PageRecord, ...]
    slas: tuple[SlaResult, ...]
    bmc: tuple[BmcFinding, ...]
    durations: Durations
    confirmed_at: float
    first_action: Action | None
    closed_by: str | None  # "recovered", "withdrawn", or None while open
    resolution: str | None  # how recovery was verified
    max_level: int | None
    due: dt.datetime | None
    record: ReportRecord
    backups: tuple[LastBackup, ...] | None = None  # None: the host has no backup contract
    due_days: int = DUE_BUSINESS_DAYS  # business days after recovery (paging.sla.report_due)

    @property
    def submitted(self) -> bool:
        """Whether the report was marked as sent to the customer."""
        return self.record.submitted_at is not None

    def overdue(self, now: float) -> bool:
        """Due date passed and not submitted."""
        return self.due is not None and not self.submitted and now > self.due.timestamp()


@dataclass(frozen=True, slots=True)
class ReportStatus:
    """One line of ``monitord report list``."""

    incident: Incident
    due: dt.datetime | None
    record: ReportRecord
    state: str  # open (not recovered), submitted, due, overdue


# -- building -----------------------------------------------------------------------------------


def due_date(calendar: DueCalendar, incident: Incident, days: int = DUE_BUSINESS_DAYS) -> dt.datetime | None:
    """When the incident's report is due (None while it is open): ``days`` business days after
    recovery (``paging.sla.report_due``), by its host's calendar."""
    if incident.closed_at is None:
        return None
    return calendar.for_host(incident.host).add_business_days(incident.closed_at, days)


async def incident_entries(store: Store, incident: Incident) -> tuple[list[JournalEntry], frozenset[int]]:
    """The journal entries a report covers, oldest first, and which carry no incident id.

    See the module docstring for the rule: the incident's id, and its soft detection.
    """
    own = await store.incidents.journal(incident_id=incident.id, limit=_SCAN)
    detection = [e for e in await store.incidents.journal(host=incident.host, since=incident.detected_at, until=incident.detected_at,
                                                          limit=_SCAN)
                 if e.event == "detected" and e.check == incident.check and e.incident_id is None]
    entries = sorted(own + detection, key=lambda e: e.id or 0)
    return [e for e in entries if e.event not in HIDDEN_EVENTS], frozenset(e.id for e in detection if e.id is not None)


async def load_report(store: Store, incident_id: int, calendar: DueCalendar, zone: dt.tzinfo | str | None = None,
                      backups: Callable[[Incident], Sequence[LastBackup] | None] | None = None,
                      due_days: int = DUE_BUSINESS_DAYS) -> Report:
    """Build the report of incident ``incident_id``; KeyError if there is no such incident.

    ``backups(incident)``: the host's last good backups before the incident began, or None when
    the host has no backup contract (:func:`monitord.shared.lastbackup.for_host`).
    """
    incident = next((i for i in await store.incidents.list() if i.id == incident_id), None)
    if incident is None:
        raise KeyError(incident_id)
    entries, host_level = await incident_entries(store, incident)
    record = (await store.incidents.report_records()).get(incident_id) or ReportRecord(incident_id)
    found = backups(incident) if backups is not None else None
    return build_report(incident, entries, due=due_date(calendar, incident, due_days), due_days=due_days, record=record,
                        zone=_zone(zone, calendar.for_host(incident.host)), host_level=host_level,
                        backups=None if found is None else tuple(found))


def build_report(incident: Incident, entries: Iterable[JournalEntry], *, due: dt.datetime | None,
                 record: ReportRecord | None = None, zone: dt.tzinfo | str = DEFAULT_ZONE,
                 host_level: frozenset[int] = frozenset(), backups: tuple[LastBackup, ...] | None = None,
                 due_days: int = DUE_BUSINESS_DAYS) -> Report:
    """Build a report from an incident and the journal entries it covers (pure); ``backups``: the
    host's last good backups when it has a backup contract."""
    entries = tuple(e for e in entries if e.event not in HIDDEN_EVENTS)
    actions = _actions(entries)
    first_action = next((a for a in actions if a.step in DESTRUCTIVE_STEPS), None)
    confirmed_at = next((e.ts for e in entries if e.event == "confirmed"), incident.opened_at)
    closed_by = None
    if incident.closed_at is not None:
        closed_by = "withdrawn" if any(e.event == "withdrawn" for e in entries) else "recovered"
    resolved = [e.reason for e in entries if e.event == "resolved" and e.reason]
    recovered = [str(e.detail.get("summary") or "") for e in entries if e.event == "recovered"]
    levels = [int(e.detail["level"]) for e in entries
              if e.event in ("decided", "page") and isinstance(e.detail.get("level"), int) and e.detail["level"] > 0]
    start = incident.detected_at
    return Report(
        incident=incident,
        zone=_zone(zone, None),
        entries=entries,
        host_level=host_level & {e.id for e in entries},
        actions=tuple(actions),
        pages=tuple(_pages(entries)),
        slas=tuple(_slas(entries, incident)),
        bmc=tuple(_bmc(entries)),
        durations=Durations(
            to_detect=confirmed_at - start,
            to_first_action=None if first_action is None else first_action.decided_at - start,
            to_recovery=None if incident.closed_at is None else incident.closed_at - start,
        ),
        confirmed_at=confirmed_at,
        first_action=first_action,
        closed_by=closed_by,
        resolution=resolved[-1] if resolved else (recovered[-1] if recovered and recovered[-1] else None),
        max_level=max(levels) if levels else None,
        due=due,
        record=record or ReportRecord(incident.id),
        backups=backups,
        due_days=due_days,
    )


def _bmc(entries: tuple[JournalEntry, ...]) -> list[BmcFinding]:
    """What each BMC read found (``findings``), or its error."""
    return [BmcFinding(e.ts, e.outcome == "ok", str(e.detail.get("findings") or e.detail.get("error") or e.reason or ""))
            for e in entries if e.event in ("outcome", "reconciled") and e.decision == "bmc_read"]


def _zone(zone: dt.tzinfo | str | None, calendar: object | None) -> dt.tzinfo:
    if isinstance(zone, dt.tzinfo):
        return zone
    if zone is None and isinstance(getattr(calendar, "zone", None), dt.tzinfo):
        return calendar.zone  # type: ignore[union-attr]
    return zoneinfo.ZoneInfo(zone or DEFAULT_ZONE)


def _actions(entries: tuple[JournalEntry, ...]) -> list[Action]:
    """Decided actions paired with their outcome (by ``ref``; a ``reconciled`` entry answers the
    latest unanswered decision of its step: the daemon restarted while it was in flight)."""
    decided = [e for e in entries if e.event == "decided"]
    answers: dict[int, JournalEntry] = {e.ref: e for e in entries if e.event == "outcome" and e.ref is not None}
    for rec in (e for e in entries if e.event == "reconciled"):
        open_ = [d for d in decided if d.id not in answers and d.decision == rec.decision and d.ts <= rec.ts]
        if open_:
            answers[open_[-1].id] = rec  # type: ignore[index]
    out = []
    for d in decided:
        level = d.detail.get("level")
        answer = answers.get(d.id)  # type: ignore[arg-type]
        out.append(Action(
            step=d.decision or "?", level=level if isinstance(level, int) else None, decided_at=d.ts,
            why=d.reason or "",
            finished_at=answer.ts if answer else None,
            outcome=answer.outcome if answer else None,
            failure=(answer.reason if answer and answer.event == "outcome" else None) or None,
            detail=_outcome_detail(d.decision or "", answer) if answer else "",
        ))
    return out


def _outcome_detail(step: str, answer: JournalEntry) -> str:
    """One line of what an action's outcome found."""
    d = answer.detail
    parts: list[str] = []
    if answer.event == "reconciled" and answer.reason:
        parts.append(answer.reason)
    if d.get("findings"):
        parts.append(str(d["findings"]))
    if step in ("power_reset", "power_cycle"):
        if d.get("driver"):
            parts.append(f"driver {d['driver']}")
        if d.get("steps"):
            parts.append(" → ".join(str(s) for s in d["steps"]))
    if step == "wait_boot" and "ping" in d:
        parts.append(f"ping {'ok' if d.get('ping') else 'NG'}, login {'ok' if d.get('login') else 'NG'}")
        if d.get("fs_errors"):
            parts.append(f"filesystem errors: {d['fs_errors'][0]}" + (f" (+{len(d['fs_errors']) - 1})"
                                                                      if len(d["fs_errors"]) > 1 else ""))
    if step == "service_restart" and d.get("probe"):
        parts.append(str(d["probe"]))
    if step == "request_approval" and "answer" in d:
        parts.append(f"answer: {d['answer'] or 'none'}")
    if d.get("error"):
        parts.append(str(d["error"]))
    return "; ".join(parts)


def _pages(entries: tuple[JournalEntry, ...]) -> list[PageRecord]:
    """Pages, each with its first acknowledgement (by ``ref``, else the latest page before it)."""
    pages = [e for e in entries if e.event == "page"]
    acks: dict[int, JournalEntry] = {}
    for ack in (e for e in entries if e.event in ACK_EVENTS):
        target = next((p for p in pages if p.id == ack.ref), None) if ack.ref is not None else None
        if target is None:
            earlier = [p for p in pages if p.ts <= ack.ts]
            target = earlier[-1] if earlier else None
        if target is not None and target.id not in acks:
            acks[target.id] = ack  # type: ignore[index]
    out = []
    for p in pages:
        ack = acks.get(p.id)  # type: ignore[arg-type]
        level = p.detail.get("level")
        out.append(PageRecord(
            at=p.ts, kind=p.decision or "?", level=level if isinstance(level, int) else None, summary=p.reason or "",
            acked_at=ack.ts if ack else None,
            acked_by=(str(ack.detail.get("by") or ack.reason or "") or None) if ack else None))
    return out


def _slas(entries: tuple[JournalEntry, ...], incident: Incident) -> list[SlaResult]:
    """SLA timers from the ``sla_*`` family (and ``arrived``); unknown ``sla_*`` events are only
    shown in the timeline."""
    out: list[SlaResult] = []
    for start in (e for e in entries if e.event == "sla_started"):
        name = start.decision or "engineer_on_site"
        due = start.detail.get("due")
        due = float(due) if isinstance(due, (int, float)) else None
        later = [e for e in entries if e.ts >= start.ts and e.id != start.id
                 and (e.decision or str(e.detail.get("name") or "") or name) == name]
        stop = next((e for e in later if e.event in SLA_STOP_EVENTS), None)
        breach = next((e for e in later if e.event == JournalEvent.SLA_BREACH), None)
        if stop is not None:
            late = (due is not None and stop.ts > due) or stop.detail.get("breached") is True
            status = "breached" if late or breach is not None and breach.ts <= stop.ts else "met"
        elif breach is not None:
            status = "breached"
        else:
            status = "running" if incident.closed_at is None else "no_record"
        out.append(SlaResult(name, start.ts, due, stop.ts if stop else None, status))
    return out


# -- list and metrics ---------------------------------------------------------------------------


async def report_statuses(store: Store, calendar: DueCalendar, now: float,
                          due_days: int = DUE_BUSINESS_DAYS) -> list[ReportStatus]:
    """Every incident's report state, newest incident first."""
    records = await store.incidents.report_records()
    out = []
    for incident in await store.incidents.list():
        record = records.get(incident.id) or ReportRecord(incident.id)
        due = due_date(calendar, incident, due_days)
        if due is None:
            state = "open"
        elif record.submitted_at is not None:
            state = "submitted"
        else:
            state = "overdue" if now > due.timestamp() else "due"
        out.append(ReportStatus(incident, due, record, state))
    return out


async def count_due_overdue(store: Store, calendar: DueCalendar, now: float,
                            due_days: int = DUE_BUSINESS_DAYS) -> tuple[int, int]:
    """(reports due and not yet late, reports overdue): unsubmitted reports of recovered
    incidents, split by whether the due date has passed. The two never overlap."""
    states = [s.state for s in await report_statuses(store, calendar, now, due_days)]
    return states.count("due"), states.count("overdue")


async def update_metrics(metrics: object, store: Store, calendar: DueCalendar, now: float,
                         due_days: int = DUE_BUSINESS_DAYS) -> None:
    """Set ``monitord_reports_due`` and ``monitord_reports_overdue`` (for the daemon's periodic call)."""
    due, overdue = await count_due_overdue(store, calendar, now, due_days)
    metrics.reports_due.set(due)  # type: ignore[attr-defined]
    metrics.reports_overdue.set(overdue)  # type: ignore[attr-defined]


# -- rendering ------------------------------------------------------------------------------------


@functools.cache
def _environment(fmt: str) -> jinja2.Environment:
    """The template environment of one format: autoescape on for HTML (values escaped the way
    :func:`html.escape` spells it, ``&quot;``, as reports always were), off for Markdown (whose
    cells go through the ``cell`` filter instead). Templates and words are package data."""
    env = jinja2.Environment(loader=jinja2.PackageLoader("monitord", "templates"), autoescape=fmt == "html",
                             finalize=_html_escape if fmt == "html" else None, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["cell"] = _md_cell
    env.filters["size"] = format_size
    env.globals["found"] = lambda e: _outcome_detail(e.decision or "", e)
    return env


@functools.cache
def _words(lang: str) -> dict:
    """The words of one language (``templates/report/words.LANG.json``)."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r} (one of {', '.join(LANGS)})")
    env = _environment("md")
    return json.loads(env.loader.get_source(env, f"report/words.{lang}.json")[0])  # type: ignore[union-attr]


class _Words:
    """Times, durations and names in one language and time zone, for the templates (``w``)."""

    def __init__(self, lang: str, zone: dt.tzinfo):
        self.t, self.zone = _words(lang), zone

    def when(self, ts: float | None, seconds: bool = False) -> str:
        """``2026-11-21 23:48 JST`` (with ``:SS`` in timelines)."""
        if ts is None:
            return "—"
        fmt = "%Y-%m-%d %H:%M:%S %Z" if seconds else "%Y-%m-%d %H:%M %Z"
        return dt.datetime.fromtimestamp(ts, self.zone).strftime(fmt)

    def duration(self, seconds: float | None) -> str:
        """``1時間2分5秒`` / ``1 h 2 min 5 s``."""
        if seconds is None:
            return self.t["none"]
        total = max(0, round(seconds))
        parts = []
        for unit, size in self.t["units"]:
            count, total = divmod(total, size)
            if count:
                parts.append(unit.format(n=count))
        return self.t["units_join"].join(parts) or self.t["units"][-1][0].format(n=0)

    def paren(self, text: str | None) -> str:
        """`` (text)`` in English, ``（text）`` in Japanese; nothing for no text."""
        return self.t["paren"].format(text=text) if text else ""

    def step(self, step: str | None) -> str:
        return self.t["steps"].get(step or "", step or "?")

    def name(self, name: str | None) -> str:
        """A page kind, guard or SLA timer."""
        return self.t["names"].get(name or "", name or "?")

    def outcome(self, outcome: str | None) -> str:
        return self.t[outcome] if outcome in ("ok", "failed") else (outcome or "")

    def event(self, event: str) -> str:
        words = self.t["events"]
        if event in ACK_EVENTS:
            return words["ack"]
        if event in SLA_STOP_EVENTS:
            return words["sla_stop"]
        if event == JournalEvent.SLA_BREACH:
            return words["sla_breached"]
        return words.get(event, event)


def _html_escape(value: object) -> object:
    """Escape a value written into HTML, once: markup the templates made is left as it is."""
    return value if hasattr(value, "__html__") else markupsafe.Markup(html.escape(str(value)))


def _md_cell(text: object) -> str:
    """One Markdown table cell (or heading, note, list item): one line, ``|`` escaped, never empty."""
    return " ".join(str(text).split()).replace("|", "\\|") or " "


def render(report: Report, fmt: str = "md", lang: str = "ja") -> str:
    """The report as Markdown (``md``) or a standalone HTML page (``html``), in ``ja`` or ``en``,
    from the templates ``templates/report/report.FORMAT.j2``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    words = _Words(lang, report.zone)
    return _environment(fmt).get_template(f"report/report.{fmt}.j2").render(
        report=report, lang=lang, t=words.t, w=words, due_business_days=report.due_days,
        check_events=CHECK_EVENTS, ack_events=ACK_EVENTS, sla_stop_events=SLA_STOP_EVENTS)
