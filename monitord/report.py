"""Incident reports (障害報告), drafted from the journal.

Contract 002 (障害報告): "障害報告は、障害復旧後 2 営業日以内に提出いたします". A report is
due at the end of business hours on the 2nd business day after the local date of recovery
(:meth:`BusinessCalendar.add_business_days`), and is overdue once that moment has passed
while the report is not marked submitted (``monitord report submit``). Overdue is judged
against the submitted mark rather than the due date alone: otherwise every past incident
would count as overdue forever and the metric could never go back to zero.

What a report is built from (:func:`incident_entries`, the only place that decides it):

1. every journal entry carrying the incident's id (the scheduler's ``confirmed``,
   ``changed``, ``recovered``; the engine's decisions, outcomes, pages, SLA timers...);
2. entries of the incident's host that carry **no** incident id, journaled from the first
   failed probe (``incidents.detected_at``) to recovery (``closed_at``) plus
   :data:`SPAN_TAIL`: the soft ``detected`` entry written before the incident was opened, a
   ladder started by the engine's periodic re-evaluation (it has no incident id), approvals
   and quarantines from the CLI. Of the check events (``detected``, ``changed``...) only
   those of the incident's own check are taken; another check's soft problem is not this
   incident. These entries are marked as host-level in the report's source line;
3. nothing else: entries of other incidents or other hosts, and entries with no host at all
   (daemon start/stop, the fleet-wide blast-radius page: the host's own ``blocked`` entry
   says why it was held). The report's own bookkeeping (``report`` events) is left out.

Durations are measured from the first failed probe (``incidents.detected_at``); the outage
may have begun up to one check interval earlier, which no journal can know.

Rendering: Markdown or HTML, Japanese (default) or English. Every value that comes from the
journal goes through one escaping function per format (HTML: :func:`html.escape`; Markdown:
table-breaking characters only), so a check summary cannot inject markup into the HTML.
Free text from the journal (reasons, findings) is shown as journaled, in English.
"""

from __future__ import annotations

import datetime as dt
import html
import zoneinfo
from dataclasses import dataclass
from typing import Callable, Iterable, Protocol, Sequence

from monitord.lastbackup import LastBackup, format_size
from monitord.state import Incident, JournalEntry, ReportRecord, Store

DUE_BUSINESS_DAYS = 2  # 障害復旧後 2 営業日以内 (contract 002)
SPAN_TAIL = 60.0  # seconds after recovery in which host-level entries still belong to the incident
DEFAULT_ZONE = "Asia/Tokyo"
FORMATS = ("md", "html")
LANGS = ("ja", "en")

DESTRUCTIVE_STEPS = frozenset({"power_reset", "power_cycle", "fsck", "service_restart"})
CHECK_EVENTS = frozenset({"detected", "confirmed", "changed", "soft_recovery", "recovered", "withdrawn"})
HIDDEN_EVENTS = frozenset({"report"})
ACK_EVENTS = frozenset({"ack", "acked", "acknowledged", "page_ack", "page_acked", "page_acknowledged"})
SLA_STOP_EVENTS = frozenset({"arrived", "sla_stopped", "sla_met", "sla_arrived"})
_SCAN = 1_000_000  # journal rows per query when gathering a report's entries


class HostCalendar(Protocol):
    """The part of :class:`monitord.business_calendar.BusinessCalendar` reports need."""

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
    """An SLA timer (e.g. engineer on site within 120 minutes) and whether it was met.

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


def due_date(calendar: DueCalendar, incident: Incident) -> dt.datetime | None:
    """When the incident's report is due (None while it is open), by its host's calendar."""
    if incident.closed_at is None:
        return None
    return calendar.for_host(incident.host).add_business_days(incident.closed_at, DUE_BUSINESS_DAYS)


def incident_entries(store: Store, incident: Incident) -> tuple[list[JournalEntry], frozenset[int]]:
    """The journal entries a report covers, oldest first, and which were included by host and time.

    See the module docstring for the rule.
    """
    own = store.journal(incident_id=incident.id, limit=_SCAN)
    until = None if incident.closed_at is None else incident.closed_at + SPAN_TAIL
    nearby = store.journal(host=incident.host, since=incident.detected_at, until=until, limit=_SCAN)
    extra = [e for e in nearby if e.incident_id is None and (e.event not in CHECK_EVENTS or e.check == incident.check)]
    entries = sorted(own + extra, key=lambda e: e.id or 0)
    return [e for e in entries if e.event not in HIDDEN_EVENTS], frozenset(e.id for e in extra if e.id is not None)


def load_report(store: Store, incident_id: int, calendar: DueCalendar, zone: dt.tzinfo | str | None = None,
                backups: Callable[[Incident], Sequence[LastBackup] | None] | None = None) -> Report:
    """Build the report of incident ``incident_id``; KeyError if there is no such incident.

    ``backups(incident)``: the host's last good backups before the incident began, or None when
    the host has no backup contract (:func:`monitord.lastbackup.for_host`).
    """
    incident = next((i for i in store.incidents() if i.id == incident_id), None)
    if incident is None:
        raise KeyError(incident_id)
    entries, host_level = incident_entries(store, incident)
    record = store.report_records().get(incident_id) or ReportRecord(incident_id)
    found = backups(incident) if backups is not None else None
    return build_report(incident, entries, due=due_date(calendar, incident), record=record,
                        zone=_zone(zone, calendar.for_host(incident.host)), host_level=host_level,
                        backups=None if found is None else tuple(found))


def build_report(incident: Incident, entries: Iterable[JournalEntry], *, due: dt.datetime | None,
                 record: ReportRecord | None = None, zone: dt.tzinfo | str = DEFAULT_ZONE,
                 host_level: frozenset[int] = frozenset(), backups: tuple[LastBackup, ...] | None = None) -> Report:
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
        breach = next((e for e in later if e.event.startswith("sla_") and "breach" in e.event), None)
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


def report_statuses(store: Store, calendar: DueCalendar, now: float) -> list[ReportStatus]:
    """Every incident's report state, newest incident first."""
    records = store.report_records()
    out = []
    for incident in store.incidents():
        record = records.get(incident.id) or ReportRecord(incident.id)
        due = due_date(calendar, incident)
        if due is None:
            state = "open"
        elif record.submitted_at is not None:
            state = "submitted"
        else:
            state = "overdue" if now > due.timestamp() else "due"
        out.append(ReportStatus(incident, due, record, state))
    return out


def count_due_overdue(store: Store, calendar: DueCalendar, now: float) -> tuple[int, int]:
    """(reports due and not yet late, reports overdue): unsubmitted reports of recovered
    incidents, split by whether the due date has passed. The two never overlap."""
    states = [s.state for s in report_statuses(store, calendar, now)]
    return states.count("due"), states.count("overdue")


def update_metrics(metrics: object, store: Store, calendar: DueCalendar, now: float) -> None:
    """Set ``monitord_reports_due`` and ``monitord_reports_overdue`` (for the daemon's periodic call)."""
    due, overdue = count_due_overdue(store, calendar, now)
    metrics.reports_due.set(due)  # type: ignore[attr-defined]
    metrics.reports_overdue.set(overdue)  # type: ignore[attr-defined]


# -- words ----------------------------------------------------------------------------------------

_T = {
    "ja": {
        "title": "障害報告書",
        "subtitle": "{host} / {check} — インシデント #{id}",
        "draft": "草案: monitord の記録（ジャーナル）から作成しました。原因と再発防止策を記入し、"
                 "復旧後 2 営業日以内にお客様へ提出してください。",
        "summary": "概要", "item": "項目", "value": "内容",
        "host": "対象ホスト", "check": "監視項目", "what": "障害内容",
        "first_seen": "障害発生（最初の監視失敗）", "confirmed": "障害確定", "first_action": "初動対応",
        "recovered": "復旧", "verified": "復旧の確認", "max_level": "最大対応レベル",
        "due": "報告期限", "submitted": "提出",
        "not_recovered": "未復旧", "withdrawn": "{when}（監視対象から除外）", "none": "なし",
        "level": "レベル {n}", "lvl": "レベル", "due_value": "{when}（復旧後 {n} 営業日以内）",
        "not_submitted": "未提出", "submitted_value": "{when} 提出済み", "submitted_by": "{when} 提出済み（{by}）",
        "durations": "所要時間", "duration": "時間", "to_detect": "検知（障害確定）まで", "to_first_action": "初動対応まで",
        "to_recovery": "復旧まで",
        "durations_note": "起点は最初に監視が失敗した時刻 {when} です（障害はそれ以前、最大で監視間隔 1 回分前に"
                          "始まっていた可能性があります）。",
        "timeline": "経過", "time": "日時", "event": "事象", "details": "内容", "result": "結果",
        "actions": "実施した対応", "no": "#", "action": "対応", "started": "開始", "finished": "終了",
        "why": "判断理由", "found": "詳細", "no_actions": "自動対応は行っていません。", "no_outcome": "記録なし",
        "pages": "担当者への呼出しと応答", "kind": "種別", "ack": "応答", "no_ack": "応答記録なし",
        "no_pages": "呼出しはありません。",
        "sla": "SLA", "sla_item": "項目", "sla_start": "開始", "sla_due": "期限", "sla_stop": "到着・停止",
        "no_sla": "SLA の計時はありません。",
        "bmc": "BMC・SEL の所見", "no_bmc": "BMC の読み取りはありません。", "bmc_failed": "読み取り失敗",
        "backups": "最後に取得したバックアップ（障害発生前）",
        "backup": "{check}: {when} 取得、世代 {generation}、保存先 {location}",
        "backup_stale": "（古い: 計画の取得間隔を超えています）",
        "backup_none": "{check}: 正常なバックアップの記録がありません（保存先 {location}）",
        "backup_unknown": "{check}: バックアップ監視の結果がまだありません",
        "backup_unchecked": "バックアップ監視が設定されていないため、最後のバックアップは不明です。",
        "cause": "原因", "cause_placeholder": "【原因】 記入してください",
        "prevention": "再発防止策", "prevention_placeholder": "【再発防止策】 記入してください",
        "source": "出典: monitord ジャーナル {n} 件（#{first}–#{last}）。うち {m} 件はインシデント番号のない"
                  "同ホストの記録で、障害期間内のため含めました。",
        "source_plain": "出典: monitord ジャーナル {n} 件（#{first}–#{last}）。",
        "ok": "成功", "failed": "失敗",
        "sla_status": {"met": "達成", "breached": "未達", "running": "計時中", "no_record": "到着記録なし"},
    },
    "en": {
        "title": "Incident report",
        "subtitle": "{host} / {check} — incident #{id}",
        "draft": "Draft generated by monitord from its journal. Fill in the root cause and prevention, "
                 "then send it to the customer within 2 business days of recovery.",
        "summary": "Summary", "item": "Item", "value": "Value",
        "host": "Host", "check": "Check", "what": "What failed",
        "first_seen": "Problem first seen (first failed check)", "confirmed": "Confirmed",
        "first_action": "First action", "recovered": "Recovered", "verified": "Recovery verified by",
        "max_level": "Highest escalation level", "due": "Report due", "submitted": "Submitted",
        "not_recovered": "not recovered", "withdrawn": "{when} (check withdrawn)", "none": "none",
        "level": "Level {n}", "lvl": "Level", "due_value": "{when} (within {n} business days of recovery)",
        "not_submitted": "not yet", "submitted_value": "{when}", "submitted_by": "{when} ({by})",
        "durations": "Durations", "duration": "Duration", "to_detect": "Time to detect (confirmed)",
        "to_first_action": "Time to first action", "to_recovery": "Time to recovery",
        "durations_note": "Measured from the first failed check at {when}; the problem may have begun up to "
                          "one check interval earlier.",
        "timeline": "Timeline", "time": "Time", "event": "Event", "details": "Details", "result": "Result",
        "actions": "Actions taken", "no": "#", "action": "Action", "started": "Started", "finished": "Finished",
        "why": "Why", "found": "Details", "no_actions": "No automatic action was taken.", "no_outcome": "not recorded",
        "pages": "Pages and acknowledgements", "kind": "Kind", "ack": "Acknowledged", "no_ack": "no acknowledgement recorded",
        "no_pages": "No pages were sent.",
        "sla": "SLA", "sla_item": "Item", "sla_start": "Started", "sla_due": "Due", "sla_stop": "Arrived / stopped",
        "no_sla": "No SLA timer was started.",
        "bmc": "BMC and SEL findings", "no_bmc": "The BMC was not read.", "bmc_failed": "read failed",
        "backups": "Last good backup (before the incident)",
        "backup": "{check}: taken {when}, generation {generation}, at {location}",
        "backup_stale": " - STALE: older than the plan allows",
        "backup_none": "{check}: no good backup known (at {location})",
        "backup_unknown": "{check}: the backup check has not run yet",
        "backup_unchecked": "No backup check is configured: the last backup is unknown.",
        "cause": "Root cause", "cause_placeholder": "Root cause: to be filled in by the engineer",
        "prevention": "Prevention", "prevention_placeholder": "Prevention: to be filled in by the engineer",
        "source": "Source: {n} monitord journal entries (#{first}–#{last}), including {m} without an incident id, "
                  "taken as entries of the same host during the incident.",
        "source_plain": "Source: {n} monitord journal entries (#{first}–#{last}).",
        "ok": "OK", "failed": "failed",
        "sla_status": {"met": "met", "breached": "breached", "running": "running", "no_record": "no arrival recorded"},
    },
}

_STEPS = {
    "ja": {"bmc_read": "BMC の読み取り（電源・SEL・センサー）", "power_reset": "ハードウェアリセット",
           "power_cycle": "電源の再投入（オフ→オン）", "wait_boot": "起動待ちと確認（ping・SSH ログイン）",
           "fsck": "ファイルシステムチェック", "service_restart": "サービスの再起動",
           "request_approval": "緊急連絡先への実施確認"},
    "en": {"bmc_read": "Read the BMC (power, SEL, sensors)", "power_reset": "Hardware reset",
           "power_cycle": "Power cycle (off, then on)", "wait_boot": "Wait for boot and verify (ping, SSH login)",
           "fsck": "Filesystem check", "service_restart": "Restart the service",
           "request_approval": "Ask the emergency contact"},
}

_EVENTS = {
    "ja": {"detected": "異常を検知（未確定）", "confirmed": "障害と判定", "changed": "状態が変化",
           "soft_recovery": "確定前に回復", "recovered": "復旧を確認", "withdrawn": "監視対象から除外",
           "decided": "対応を決定", "outcome": "対応の結果", "reconciled": "再起動後の照合",
           "blocked": "安全装置により保留", "page": "担当者を呼出し", "ack": "呼出しに応答",
           "sla_started": "SLA 計時開始", "sla_stop": "SLA 計時停止（到着）", "sla_breached": "SLA 超過",
           "resolved": "対応完了", "deferred": "再評価を延期", "note": "記録", "approval": "緊急連絡先の回答",
           "quarantine": "隔離", "maintenance": "メンテナンス", "page_delivery": "呼出しの送信",
           "vendor_escalated": "関連ベンダーへエスカレーション"},
    "en": {"detected": "Problem detected (unconfirmed)", "confirmed": "Problem confirmed", "changed": "Status changed",
           "soft_recovery": "Recovered before confirmation", "recovered": "Recovered", "withdrawn": "Check withdrawn",
           "decided": "Action decided", "outcome": "Action outcome", "reconciled": "Reconciled after a restart",
           "blocked": "Held by a safety guard", "page": "Paged on-call", "ack": "Page acknowledged",
           "sla_started": "SLA timer started", "sla_stop": "SLA timer stopped (arrival)", "sla_breached": "SLA breached",
           "resolved": "Escalation resolved", "deferred": "Re-evaluation deferred", "note": "Note",
           "approval": "Emergency contact answered", "quarantine": "Quarantine", "maintenance": "Maintenance",
           "page_delivery": "Page delivery", "vendor_escalated": "Escalated to the vendor"},
}

_NAMES = {  # page kinds, guards, SLA timers
    "ja": {"dispatch": "技術者の現地派遣", "host_down": "ホスト停止", "service_failed": "サービス復旧失敗", "action_held": "対応保留",
           "blast_radius": "監視側障害の疑い", "maintenance": "メンテナンス中", "parent_down": "上位機器の障害",
           "quarantined": "隔離中", "dry_run": "ドライラン", "limit": "実施回数の上限",
           "no_answer": "緊急連絡先の応答なし", "denied": "緊急連絡先が拒否",
           "engineer_on_site": "技術者の現地到着"},
    "en": {"dispatch": "on-site dispatch", "host_down": "host down", "service_failed": "service not restored",
           "action_held": "action held",
           "blast_radius": "monitor-side failure suspected", "maintenance": "maintenance window",
           "parent_down": "parent down", "quarantined": "quarantined", "dry_run": "dry run",
           "limit": "attempt limit", "no_answer": "no answer from the emergency contact",
           "denied": "declined by the emergency contact", "engineer_on_site": "engineer on site"},
}


class _Words:
    """Localised words and formats for one language and time zone."""

    def __init__(self, lang: str, zone: dt.tzinfo):
        if lang not in LANGS:
            raise ValueError(f"unknown language {lang!r} (one of {', '.join(LANGS)})")
        self.lang, self.zone = lang, zone
        self.t = _T[lang]

    def __getitem__(self, key: str) -> str:
        return self.t[key]

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
        units = (("日", "d", 86400), ("時間", "h", 3600), ("分", "min", 60), ("秒", "s", 1))
        parts = []
        for ja, en, size in units:
            count, total = divmod(total, size)
            if count:
                parts.append(f"{count}{ja}" if self.lang == "ja" else f"{count} {en}")
        return ("" if self.lang == "ja" else " ").join(parts) or ("0秒" if self.lang == "ja" else "0 s")

    def paren(self, text: str | None) -> str:
        """`` (text)`` in English, ``（text）`` in Japanese; nothing for no text."""
        if not text:
            return ""
        return f"（{text}）" if self.lang == "ja" else f" ({text})"

    def step(self, step: str | None) -> str:
        return _STEPS[self.lang].get(step or "", step or "?")

    def name(self, name: str | None) -> str:
        return _NAMES[self.lang].get(name or "", name or "?")

    def outcome(self, outcome: str | None) -> str:
        return self.t.get(outcome or "", outcome or "") if outcome in ("ok", "failed") else (outcome or "")

    def event(self, event: str) -> str:
        words = _EVENTS[self.lang]
        if event in ACK_EVENTS:
            return words["ack"]
        if event in SLA_STOP_EVENTS:
            return words["sla_stop"]
        if event.startswith("sla_") and "breach" in event:
            return words["sla_breached"]
        return words.get(event, event)


# -- a neutral document, then Markdown or HTML --------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Block:
    kind: str  # h1, h2, note, p, kv, table, list
    text: str = ""
    head: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def _document(report: Report, w: _Words) -> list[_Block]:
    inc = report.incident
    check = inc.check if inc.kind == inc.check else f"{inc.check} ({inc.kind})"
    first = report.first_action
    if report.closed_by is None:
        recovered = w["not_recovered"]
    elif report.closed_by == "withdrawn":
        recovered = w["withdrawn"].format(when=w.when(inc.closed_at))
    else:
        recovered = w.when(inc.closed_at)
    rec = report.record
    if rec.submitted_at is None:
        submitted = w["not_submitted"]
    elif rec.submitted_by:
        submitted = w["submitted_by"].format(when=w.when(rec.submitted_at), by=rec.submitted_by)
    else:
        submitted = w["submitted_value"].format(when=w.when(rec.submitted_at))
    due = w["none"] if report.due is None else w["due_value"].format(
        when=w.when(report.due.timestamp()), n=DUE_BUSINESS_DAYS)
    doc = [
        _Block("h1", f"{w['title']}: " + w["subtitle"].format(host=inc.host, check=inc.check, id=inc.id)),
        _Block("note", w["draft"]),
        _Block("h2", w["summary"]),
        _Block("kv", head=(w["item"], w["value"]), rows=(
            (w["host"], inc.host),
            (w["check"], check),
            (w["what"], inc.summary),
            (w["first_seen"], w.when(inc.detected_at)),
            (w["confirmed"], w.when(report.confirmed_at)),
            (w["first_action"], w["none"] if first is None else f"{w.when(first.decided_at)} {w.step(first.step)}"),
            (w["recovered"], recovered),
            (w["verified"], report.resolution or w["none"]),
            (w["max_level"], w["none"] if report.max_level is None else w["level"].format(n=report.max_level)),
            (w["due"], due),
            (w["submitted"], submitted),
        )),
        _Block("h2", w["durations"]),
        _Block("kv", head=(w["item"], w["duration"]), rows=(
            (w["to_detect"], w.duration(report.durations.to_detect)),
            (w["to_first_action"], w.duration(report.durations.to_first_action)),
            (w["to_recovery"], w.duration(report.durations.to_recovery)),
        )),
        _Block("p", w["durations_note"].format(when=w.when(inc.detected_at, seconds=True))),
        _Block("h2", w["timeline"]),
        _Block("table", head=(w["time"], w["event"], w["details"], w["result"]),
               rows=tuple(_timeline_row(e, w) for e in report.entries)),
        _Block("h2", w["actions"]),
    ]
    if report.actions:
        doc.append(_Block("table", head=(w["no"], w["lvl"], w["action"],
                                         w["started"], w["finished"], w["result"], w["why"], w["found"]),
                          rows=tuple((str(n), "" if a.level is None else str(a.level), w.step(a.step),
                                      w.when(a.decided_at, seconds=True), w.when(a.finished_at, seconds=True),
                                      w.outcome(a.outcome) + w.paren(a.failure)
                                      if a.outcome else w["no_outcome"], a.why, a.detail)
                                     for n, a in enumerate(report.actions, 1))))
    else:
        doc.append(_Block("p", w["no_actions"]))
    doc.append(_Block("h2", w["pages"]))
    if report.pages:
        doc.append(_Block("table", head=(w["time"], w["kind"], w["lvl"], w["details"], w["ack"]), rows=tuple(
            (w.when(p.at, seconds=True), w.name(p.kind), "" if p.level is None else str(p.level), p.summary,
             w["no_ack"] if p.acked_at is None else w.when(p.acked_at, seconds=True) + w.paren(p.acked_by))
            for p in report.pages)))
    else:
        doc.append(_Block("p", w["no_pages"]))
    doc.append(_Block("h2", w["sla"]))
    if report.slas:
        head = (w["sla_item"], w["sla_start"], w["sla_due"], w["sla_stop"], w["result"])
        doc.append(_Block("table", head=head, rows=tuple(
            (w.name(s.name) + ("" if s.due is None else w.paren(w.duration(s.due - s.started_at))),
             w.when(s.started_at), w.when(s.due), w.when(s.stopped_at), w["sla_status"][s.status])  # type: ignore[index]
            for s in report.slas)))
    else:
        doc.append(_Block("p", w["no_sla"]))
    doc.append(_Block("h2", w["bmc"]))
    if report.bmc:
        doc.append(_Block("list", rows=tuple(
            (f"{w.when(b.at, seconds=True)}: " + (b.text if b.ok else f"{w['bmc_failed']}: {b.text}"),)
            for b in report.bmc)))
    else:
        doc.append(_Block("p", w["no_bmc"]))
    if report.backups is not None:
        doc.append(_Block("h2", w["backups"]))
        doc.append(_Block("list", rows=tuple((_backup_line(b, w),) for b in report.backups))
                   if report.backups else _Block("p", w["backup_unchecked"]))
    doc += [
        _Block("h2", w["cause"]),
        _Block("p", (rec.root_cause or "").strip() or w["cause_placeholder"]),
        _Block("h2", w["prevention"]),
        _Block("p", (rec.prevention or "").strip() or w["prevention_placeholder"]),
    ]
    ids = [e.id for e in report.entries if e.id is not None]
    if ids:
        key = "source" if report.host_level else "source_plain"
        doc.append(_Block("note", w[key].format(n=len(ids), first=min(ids), last=max(ids), m=len(report.host_level))))
    return doc


def _backup_line(b: LastBackup, w: _Words) -> str:
    """One backup check's last good backup, or plainly that none is known."""
    if b.checked_at is None:
        return w["backup_unknown"].format(check=b.check)
    if b.at is None:
        return w["backup_none"].format(check=b.check, location=b.location)
    text = w["backup"].format(check=b.check, when=w.when(b.at), generation=b.generation, location=b.location)
    size = "" if b.size is None else ("、" if w.lang == "ja" else ", ") + format_size(b.size)
    return text + size + (w["backup_stale"] if b.stale else "")


def _timeline_row(e: JournalEntry, w: _Words) -> tuple[str, str, str, str]:
    """(time, event, details, result) of one journal entry."""
    level = e.detail.get("level")
    lvl = f"L{level} " if isinstance(level, int) and level > 0 else ""
    if e.event in CHECK_EVENTS:
        details = str(e.detail.get("summary") or e.reason or "")
        result = (e.outcome or "") + (w.paren(e.reason) if e.outcome else "")
    elif e.event == "decided":
        details, result = f"{lvl}{w.step(e.decision)}: {e.reason or ''}".rstrip(": "), ""
    elif e.event in ("outcome", "reconciled"):
        found = _outcome_detail(e.decision or "", e)
        details = f"{w.step(e.decision)}" + (f": {found}" if found else "")
        result = w.outcome(e.outcome) + (w.paren(e.reason) if e.event == "outcome" else "")
    elif e.event == "blocked":
        details, result = f"{w.name(e.decision)}: {e.reason or ''}", ""
    elif e.event == "page":
        details, result = f"{lvl}{w.name(e.decision)}: {e.reason or ''}", ""
    elif e.event in ACK_EVENTS:
        details, result = str(e.detail.get("by") or e.reason or ""), ""
    elif e.event.startswith("sla_") or e.event in SLA_STOP_EVENTS:
        due = e.detail.get("due")
        details = w.name(e.decision or "engineer_on_site") + (
            w.paren(f"{w['sla_due']} {w.when(due)}") if isinstance(due, (int, float)) else "")
        result = ""
    else:
        details = ": ".join(x for x in (e.decision, e.reason) if x)
        result = e.outcome or ""
    return w.when(e.ts, seconds=True), w.event(e.event), details, result


def _md_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|") or " "


def _markdown(doc: list[_Block]) -> str:
    out: list[str] = []
    for b in doc:
        if b.kind == "h1":
            out += [f"# {_md_cell(b.text)}", ""]
        elif b.kind == "h2":
            out += [f"## {_md_cell(b.text)}", ""]
        elif b.kind == "note":
            out += [f"> {_md_cell(b.text)}", ""]
        elif b.kind == "p":
            out += [*b.text.splitlines(), ""]
        elif b.kind == "list":
            out += [f"- {_md_cell(row[0])}" for row in b.rows] + [""]
        else:  # kv, table
            out.append("| " + " | ".join(_md_cell(h) for h in b.head) + " |")
            out.append("|" + "|".join("---" for _ in b.head) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


_CSS = """body { font-family: sans-serif; max-width: 60em; margin: 2em auto; line-height: 1.5; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #999; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; }
blockquote { color: #555; border-left: 3px solid #ccc; margin: 0; padding-left: 1em; }
.fill { white-space: pre-wrap; }"""


def _html(doc: list[_Block], lang: str, title: str) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", f'<html lang="{lang}">', "<head>", '<meta charset="utf-8">',
           f"<title>{e(title)}</title>", f"<style>\n{_CSS}\n</style>", "</head>", "<body>"]
    for b in doc:
        if b.kind in ("h1", "h2"):
            out.append(f"<{b.kind}>{e(b.text)}</{b.kind}>")
        elif b.kind == "note":
            out.append(f"<blockquote><p>{e(b.text)}</p></blockquote>")
        elif b.kind == "p":
            out.append(f'<p class="fill">{e(b.text)}</p>')
        elif b.kind == "list":
            out += ["<ul>", *(f"<li>{e(row[0])}</li>" for row in b.rows), "</ul>"]
        else:
            out.append("<table>")
            out.append("<tr>" + "".join(f"<th>{e(h)}</th>" for h in b.head) + "</tr>")
            for row in b.rows:
                cells = [f"<th>{e(row[0])}</th>" if b.kind == "kv" else f"<td>{e(row[0])}</td>"]
                cells += [f"<td>{e(c)}</td>" for c in row[1:]]
                out.append("<tr>" + "".join(cells) + "</tr>")
            out.append("</table>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


def render(report: Report, fmt: str = "md", lang: str = "ja") -> str:
    """The report as Markdown (``md``) or a standalone HTML page (``html``), in ``ja`` or ``en``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    words = _Words(lang, report.zone)
    doc = _document(report, words)
    if fmt == "md":
        return _markdown(doc)
    return _html(doc, lang, doc[0].text)
