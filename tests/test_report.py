"""Incident reports (障害報告): built from a journal with fixed timestamps, rendered in four
variants and compared byte for byte with golden files (``UPDATE_GOLDEN=1`` rewrites them)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import types
import zipfile
import zoneinfo
from pathlib import Path

import pytest

from monitord.config import parse_config
from monitord.edge import cli
from monitord.paging.business_calendar import BusinessCalendar
from monitord.edge.metrics import Metrics
from monitord.records.report import (
    build_report, count_due_overdue, due_date, incident_entries, load_report, render, report_statuses, update_metrics,
)
from monitord.records.state import Incident, JournalEntry, ReportRecord, SQLiteStore

GOLDEN = Path(__file__).parent / "data" / "reports"
TOKYO = zoneinfo.ZoneInfo("Asia/Tokyo")
CALENDAR = BusinessCalendar()  # contract defaults: Mon-Fri 10:00-18:00 Asia/Tokyo, Japanese holidays


def jst(day: int, hh: int, mm: int, ss: int = 0, month: int = 11) -> float:
    """Epoch seconds of 2026-MM-DD hh:mm:ss in Tokyo (2026-11-13 is a Friday)."""
    return dt.datetime(2026, month, day, hh, mm, ss, tzinfo=TOKYO).timestamp()


async def add(store: SQLiteStore, ts: float, event: str, **kw) -> int:
    return await store.incidents.append(JournalEntry(ts=ts, event=event, **kw))


async def host_down_incident(store: SQLiteStore, summary: str = "no reply from 192.0.2.10 (3 sent)") -> int:
    """web1 stops answering ping on a Friday evening: BMC read, reset, no boot, power cycle, boot, recovered.

    Mixed in: entries the report must leave out (another host, another incident of the same host,
    another check's soft problem, the daemon, an entry long after recovery).
    """
    crit = dict(host="web1", check="ping", reason="unreachable", outcome="critical")
    await add(store, jst(13, 18, 0), "daemon", decision="started", reason="monitord 0.1.0")  # no host: left out
    await add(store, jst(13, 19, 2, 10), "detected", detail={"summary": summary, "attempt": 1, "max_attempts": 3}, **crit)
    await add(store, jst(13, 19, 2, 40), "detected", host="db1", check="ping", reason="timeout", outcome="critical",
              detail={"summary": "db1 slow"})  # another host: left out
    incident = await store.incidents.open("web1", "ping", "ping", jst(13, 19, 3, 10), jst(13, 19, 2, 10), summary)
    await add(store, jst(13, 19, 3, 10), "confirmed", incident_id=incident,
              detail={"summary": summary, "attempt": 3, "max_attempts": 3}, **crit)
    ladder = dict(host="web1", check="ping", incident_id=incident)
    bmc = await add(store, jst(13, 19, 3, 11), "decided", decision="bmc_read",
                    reason="host down: read the BMC (power, SEL, sensors)", detail={"level": 1}, **ladder)
    page = await add(store, jst(13, 19, 3, 11), "page", decision="host_down", reason="web1 is down: level 1 remediation started",
                     detail={"level": 1}, **ladder)
    await add(store, jst(13, 19, 3, 14), "outcome", host="web1", incident_id=incident, decision="bmc_read", outcome="ok",
              ref=bmc, detail={"findings": "power on; 2 SEL events (last: PCI PERR: Critical Interrupt (Asserted)); "
                                     "sensors: 1 critical (CPU1 Temp 98 C)"})
    reset = await add(store, jst(13, 19, 3, 14), "decided", decision="power_reset", reason="BMC read; hardware reset",
                      detail={"level": 1, "driver": "ipmi"}, **ladder)
    await add(store, jst(13, 19, 3, 20), "outcome", host="web1", incident_id=incident, decision="power_reset", outcome="ok",
              ref=reset, detail={"driver": "ipmi", "steps": ["ipmi: power was on", "ipmi: sent reset (attempt 1)",
                                                       "ipmi: power is on"]})
    boot1 = await add(store, jst(13, 19, 3, 20), "decided", decision="wait_boot",
                      reason="wait up to 600s for boot, then verify ping and SSH login", detail={"level": 1, "timeout": 600.0},
                      **ladder)
    await add(store, jst(13, 19, 5, 0), "detected", host="web1", check="http", reason="refused", outcome="critical",
              detail={"summary": "connection refused"})  # another check's soft problem: left out
    other = await store.incidents.open("web1", "http", "http", jst(13, 19, 6, 0), jst(13, 19, 5, 0), "connection refused")
    await add(store, jst(13, 19, 6, 0), "confirmed", host="web1", check="http", incident_id=other, reason="refused",
              outcome="critical", detail={"summary": "connection refused"})  # another incident: left out
    await add(store, jst(13, 19, 9, 30), "ack", host="web1", incident_id=incident, ref=page, detail={"by": "tanaka"})
    await add(store, jst(13, 19, 13, 20), "outcome", host="web1", incident_id=incident, decision="wait_boot",
              reason="timeout", outcome="failed", ref=boot1,
              detail={"ping": False, "login": False, "fs_errors": [], "note": ""})
    cycle = await add(store, jst(13, 19, 13, 20), "decided", decision="power_cycle",
                      reason="host did not come back after the reset: power-cycle", detail={"level": 2, "driver": "ipmi"},
                      **ladder)
    await add(store, jst(13, 19, 13, 34), "outcome", host="web1", incident_id=incident, decision="power_cycle", outcome="ok",
              ref=cycle, detail={"driver": "ipmi", "steps": ["ipmi: power was on", "ipmi: sent off (attempt 1)",
                                                       "ipmi: power is off", "ipmi: sent on (attempt 1)",
                                                       "ipmi: power is on"]})
    boot2 = await add(store, jst(13, 19, 13, 34), "decided", decision="wait_boot",
                      reason="wait up to 600s for boot, then verify ping and SSH login", detail={"level": 2, "timeout": 600.0},
                      **ladder)
    await add(store, jst(13, 19, 16, 50), "recovered", host="web1", check="ping", incident_id=incident, outcome="ok",
              detail={"summary": "192.0.2.10: 3/3 replies, 0% loss, rtt min/avg/max 0.4/0.5/0.7 ms"})
    await store.incidents.close(incident, jst(13, 19, 16, 50))
    await add(store, jst(13, 19, 17, 5), "outcome", host="web1", incident_id=incident, decision="wait_boot", outcome="ok",
              ref=boot2, detail={"ping": True, "login": True, "fs_errors": [], "note": ""})
    await add(store, jst(13, 19, 17, 5), "resolved", host="web1", incident_id=incident,
              reason="host answers ping and an SSH login succeeded")
    await add(store, jst(13, 19, 40), "detected", host="web1", check="ping", reason="unreachable", outcome="critical",
              detail={"summary": "later"})  # after recovery: left out
    return incident


@pytest.fixture
async def store(tmp_path):
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    await s.close()


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from the golden file (UPDATE_GOLDEN=1 rewrites it)"


@pytest.mark.parametrize("fmt", ["md", "html"])
@pytest.mark.parametrize("lang", ["ja", "en"])
async def test_rendering_matches_the_golden_files(store, fmt, lang):
    incident = await host_down_incident(store)
    golden(f"host_down.{lang}.{fmt}", render(await load_report(store, incident, CALENDAR), fmt, lang))


async def test_host_down_report_figures(store):
    report = await load_report(store, await host_down_incident(store), CALENDAR)
    assert report.durations.to_detect == 60  # first failed probe 19:02:10, confirmed 19:03:10
    assert report.durations.to_first_action == 64  # the hardware reset was decided at 19:03:14
    assert report.durations.to_recovery == 14 * 60 + 40  # recovered 19:16:50
    assert report.first_action.step == "power_reset"
    assert [(a.step, a.level, a.outcome) for a in report.actions] == [
        ("bmc_read", 1, "ok"), ("power_reset", 1, "ok"), ("wait_boot", 1, "failed"), ("power_cycle", 2, "ok"),
        ("wait_boot", 2, "ok")]
    assert report.actions[2].failure == "timeout"
    assert report.max_level == 2
    assert report.closed_by == "recovered"
    assert report.resolution == "host answers ping and an SSH login succeeded"
    assert [(p.kind, p.acked_at, p.acked_by) for p in report.pages] == [("host_down", jst(13, 19, 9, 30), "tanaka")]
    assert [b.text for b in report.bmc] == [
        "power on; 2 SEL events (last: PCI PERR: Critical Interrupt (Asserted)); sensors: 1 critical (CPU1 Temp 98 C)"]
    assert report.slas == ()
    # Friday 19:16 recovery: Monday is business day 1, Tuesday day 2; due at its close of business.
    assert report.due == dt.datetime(2026, 11, 17, 18, 0, tzinfo=TOKYO)


async def test_report_covers_its_incident_and_the_hosts_entries_without_an_id(store):
    incident = await host_down_incident(store)
    entries, host_level = await incident_entries(store, next(i for i in await store.incidents.list() if i.id == incident))
    events = [(e.event, e.host, e.check, e.incident_id) for e in entries]
    assert events[0] == ("detected", "web1", "ping", None)  # soft detection before the incident opened
    assert [e for e in entries if e.id in host_level] == [entries[0]]
    assert all(e.host == "web1" for e in entries)  # no daemon entry, no db1
    assert all(e.check in ("ping", None) for e in entries)  # not the http detection nor its incident
    assert max(e.ts for e in entries) == jst(13, 19, 17, 5)  # not the detection at 19:40


async def test_entries_without_an_incident_id_are_not_taken_by_time(store):
    """Issue #10 changed this: a report keys on incident ids, never on a time window. Entries of
    the host and check journaled during the incident without its id (a ladder re-evaluated by an
    older version, its outcome, a note) are not the incident's; nor is a soft detection of the
    same check that is not the one the incident recorded as its first failed probe."""
    start = jst(13, 3, 0)
    incident = await store.incidents.open("web1", "ping", "ping", start + 60, start, "down")
    await add(store, start - 600, "detected", host="web1", check="ping", outcome="critical")  # an earlier flap
    await add(store, start, "detected", host="web1", check="db", outcome="critical")  # another check, same instant
    await add(store, start, "detected", host="db1", check="ping", outcome="critical")  # another host, same instant
    await add(store, start + 60, "confirmed", host="web1", check="ping", incident_id=incident, outcome="critical")
    decided = await add(store, start + 90, "decided", host="web1", check="ping", decision="power_reset", reason="again",
                        detail={"level": 1, "driver": "pdu"})
    await add(store, start + 95, "blocked", host="web1", check="ping", decision="maintenance", reason="window")
    await add(store, start + 120, "detected", host="web1", check="ping", outcome="critical")
    await store.incidents.close(incident, start + 300)
    await add(store, start + 330, "outcome", host="web1", decision="power_reset", outcome="ok", ref=decided)
    report = await load_report(store, incident, CALENDAR)
    assert [e.event for e in report.entries] == ["confirmed"]
    assert report.host_level == frozenset() and report.actions == () and report.durations.to_first_action is None
    assert "without an incident id" not in render(report, "md", "en")


async def test_report_of_an_incident_the_scheduler_journaled(tmp_path):
    """The scheduler's own rows: an earlier flap, the streak that confirmed, recovery, a later
    soft problem; the report takes the streak's soft detection (written before the incident
    existed, so without its id) and the incident's rows, nothing else."""
    from monitord.run.scheduler import Scheduler
    from tests.fakeclock import FakeClock
    from tests.test_scheduler import Script, spec, start, stop

    clock, script = FakeClock(), Script()
    script.clock = clock
    store = SQLiteStore(tmp_path / "state.db")
    scheduler = Scheduler(clock=clock, store=store, metrics=Metrics(), ctx=types.SimpleNamespace(), max_concurrency=10)
    check = spec(script, "web1", attempts=3, retry=60)
    await scheduler.load([check])
    task = await start(scheduler)

    async def runs(n: int, failing: bool) -> None:
        (script.failing.add if failing else script.failing.discard)("web1")
        for _ in range(n):
            await clock.advance(scheduler.due_times()[check.id] - clock.time() + 1)

    await runs(1, failing=True)  # detected
    await runs(1, failing=False)  # soft recovery: a flap, no incident
    await runs(3, failing=True)  # detected, retried, confirmed
    await runs(1, failing=False)  # recovered
    await runs(1, failing=True)  # detected again: not this incident
    await stop(task)
    [incident] = await store.incidents.list()
    assert [e.event for e in await store.incidents.journal()] == [
        "detected", "soft_recovery", "detected", "confirmed", "recovered", "detected"]
    report = await load_report(store, incident.id, CALENDAR)
    assert [(e.event, e.incident_id) for e in report.entries] == [
        ("detected", None), ("confirmed", incident.id), ("recovered", incident.id)]
    assert report.entries[0].ts == incident.detected_at and report.host_level == {report.entries[0].id}
    assert report.durations.to_detect == 120
    await store.close()


def test_due_date_skips_weekends_and_holidays():
    # Recovered Friday 2026-11-13 19:16 (after hours) or 11:00 (in hours): due Tuesday 18:00 either way.
    closed = lambda at: Incident(1, "web1", "ping", "ping", at, at, at, "down")  # noqa: E731
    assert due_date(CALENDAR, closed(jst(13, 19, 16, 50))) == dt.datetime(2026, 11, 17, 18, 0, tzinfo=TOKYO)
    assert due_date(CALENDAR, closed(jst(13, 11, 0))) == dt.datetime(2026, 11, 17, 18, 0, tzinfo=TOKYO)
    # Friday 2026-11-20: Monday 11/23 is 勤労感謝の日, so Tuesday and Wednesday count.
    assert due_date(CALENDAR, closed(jst(20, 19, 0))) == dt.datetime(2026, 11, 25, 18, 0, tzinfo=TOKYO)
    assert due_date(CALENDAR, Incident(1, "web1", "ping", "ping", 0, 0, None, "down")) is None


async def test_the_report_due_term_comes_from_the_config(store):
    """paging.sla.report_due: a contract with 3 business days moves the due date, the overdue
    count and the report's words together."""
    incident = await host_down_incident(store)
    config = parse_config("paging: {sla: {report_due: 3}}\nhosts: {web1: {address: 192.0.2.10}}\n")
    days = config.paging.sla.report_due
    assert (days, parse_config("hosts: {web1: {address: 192.0.2.10}}\n").paging.sla.report_due) == (3, 2)
    report = await load_report(store, incident, CALENDAR, due_days=days)
    assert report.due == dt.datetime(2026, 11, 18, 18, 0, tzinfo=TOKYO)  # Friday's recovery: Wednesday, not Tuesday
    assert await count_due_overdue(store, CALENDAR, jst(17, 18, 1), days) == (1, 0)  # not late on Tuesday evening
    assert "within 3 business days of recovery" in render(report, "md", "en")


async def test_overdue_counts_unsubmitted_reports_past_their_due_date(store):
    incident = await host_down_incident(store)  # the http incident (#2) stays open: no report due yet
    due = jst(17, 18, 0)
    assert await count_due_overdue(store, CALENDAR, due - 1) == (1, 0)
    assert await count_due_overdue(store, CALENDAR, due + 1) == (0, 1)
    assert (await load_report(store, incident, CALENDAR)).overdue(due + 1)
    assert {s.incident.id: s.state for s in await report_statuses(store, CALENDAR, due + 1)} == {
        incident: "overdue", incident + 1: "open"}
    await store.incidents.put_report_record(ReportRecord(incident, submitted_at=due + 10, submitted_by="tanaka"))
    assert await count_due_overdue(store, CALENDAR, due + 100) == (0, 0)
    assert not (await load_report(store, incident, CALENDAR)).overdue(due + 100)
    metrics = Metrics()
    await store.incidents.put_report_record(ReportRecord(incident))
    await update_metrics(metrics, store, CALENDAR, due + 100)
    text = metrics.exposition().decode()
    assert "monitord_reports_overdue 1.0" in text and "monitord_reports_due 0.0" in text


def _sla_report(*entries: JournalEntry, closed: float | None = 5000.0):
    incident = Incident(1, "web1", "ping", "ping", 100.0, 100.0, closed, "down")
    numbered = [dataclasses.replace(e, id=n) for n, e in enumerate(entries, 1)]
    return build_report(incident, numbered, due=None)


def test_sla_results_from_the_sla_events_monitord_writes():
    started = JournalEntry(ts=200.0, event="sla_started", host="web1", decision="engineer_on_site",
                           detail={"due": 200.0 + 7200})
    met = _sla_report(started, JournalEntry(ts=3000.0, event="sla_stopped", host="web1", detail={"by": "sato"}))
    assert [(s.name, s.stopped_at, s.status) for s in met.slas] == [("engineer_on_site", 3000.0, "met")]
    late = _sla_report(started, JournalEntry(ts=9000.0, event="sla_stopped", host="web1", decision="engineer_on_site"))
    assert late.slas[0].status == "breached"
    breached = _sla_report(started, JournalEntry(ts=7400.0, event="sla_breach", host="web1",
                                                 decision="engineer_on_site"))
    assert breached.slas[0].status == "breached"
    assert _sla_report(started).slas[0].status == "no_record"
    assert _sla_report(started, closed=None).slas[0].status == "running"
    odd = _sla_report(started, JournalEntry(ts=300.0, event="sla_paused", host="web1", decision="engineer_on_site"))
    assert odd.slas[0].status == "no_record"  # an unknown sla_* event is shown, not misread
    assert "sla_paused" in render(odd, "md", "en") and "no arrival recorded" in render(odd, "md", "en")
    assert "技術者の現地到着（2時間）" in render(met, "md", "ja") and "| 達成 |" in render(met, "md", "ja")


def test_reconciled_entry_answers_the_action_in_flight():
    report = _sla_report(
        JournalEntry(ts=200.0, event="decided", host="web1", decision="power_reset", detail={"level": 1}),
        JournalEntry(ts=260.0, event="reconciled", host="web1", decision="power_reset", outcome="ok",
                     reason="resumed after restart: power_reset was decided at 200; power is on; not re-issuing it"))
    assert report.actions[0].outcome == "ok" and report.actions[0].finished_at == 260.0
    assert "not re-issuing it" in report.actions[0].detail


async def test_html_escapes_journal_text(store):
    incident = await host_down_incident(store, summary='<script>alert("x")</script> & | pipe')
    page = render(await load_report(store, incident, CALENDAR), "html", "en")
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; | pipe" in page
    markdown = render(await load_report(store, incident, CALENDAR), "md", "en")
    assert "| What failed | <script>alert(\"x\")</script> & \\| pipe |" in markdown  # a pipe cannot break the table


async def test_autoescape_on_for_html_off_for_markdown(store):
    """Hostile text wherever the journal and the engineer put it: the HTML shows it as text
    (escaped once, not twice), the Markdown keeps it verbatim but cannot break out of a cell."""
    hostile = '<img src=x onerror="alert(1)">&amp; | </td></table>'
    incident = await host_down_incident(store, summary=hostile)
    await add(store, jst(13, 19, 20), "note", host="web1", incident_id=incident, decision=hostile, reason=hostile)
    await store.incidents.put_report_record(ReportRecord(incident, root_cause=hostile, prevention=hostile))
    report = await load_report(store, incident, CALENDAR)
    escaped = "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;amp; | &lt;/td&gt;&lt;/table&gt;"
    for lang in ("ja", "en"):
        page = render(report, "html", lang)
        assert "<img" not in page and "</td></table>" not in page and "&amp;amp;amp;" not in page
        # what failed; the detected and confirmed rows; the note (its decision and reason); cause; prevention
        assert page.count(escaped) == 7
        assert page.count("<table>") == page.count("</table>") == 5
        markdown = render(report, "md", lang)
        assert "&lt;" not in markdown and "&quot;" not in markdown
        assert f"| {hostile.replace('|', chr(92) + '|')} |" in markdown  # the summary row, its pipe escaped
        assert f"\n\n{hostile}\n\n" in markdown  # the root cause paragraph as written


async def test_engineer_text_replaces_the_placeholders(store):
    incident = await host_down_incident(store)
    await store.incidents.put_report_record(ReportRecord(incident, root_cause="Memory fault (DIMM A2).\nReplaced on 11/16.",
                                                         prevention="Memory added to the hardware check list."))
    ja = render(await load_report(store, incident, CALENDAR), "md", "ja")
    assert "【原因】" not in ja and "Memory fault (DIMM A2).\nReplaced on 11/16.\n" in ja
    html_page = render(await load_report(store, incident, CALENDAR), "html", "ja")
    assert '<p class="fill">Memory fault (DIMM A2).\nReplaced on 11/16.</p>' in html_page


async def test_unknown_format_or_language_is_refused(store):
    report = await load_report(store, await host_down_incident(store), CALENDAR)
    with pytest.raises(ValueError):
        render(report, "pdf")
    with pytest.raises(ValueError):
        render(report, "md", "fr")
    with pytest.raises(KeyError):
        await load_report(store, 99, CALENDAR)


# -- the command line ----------------------------------------------------------------------------


@pytest.fixture
async def cli_store(tmp_path):
    config = tmp_path / "monitord.yaml"
    config.write_text(f"daemon: {{state_path: {tmp_path / 'state.db'}}}\n")
    store = SQLiteStore(tmp_path / "state.db")
    incident = await host_down_incident(store)
    await store.close()
    return str(config), incident, tmp_path


def test_cli_list_show_render(cli_store, capsys, monkeypatch):
    config, incident, tmp = cli_store
    monkeypatch.setattr(cli, "time", types.SimpleNamespace(time=lambda: jst(18, 9, 0)))  # the day after the due date
    assert cli.main(["report", "list", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["INCIDENT", "HOST", "CHECK", "RECOVERED", "DUE", "OVERDUE", "STATE"]
    assert lines[2].split() == [str(incident), "web1", "ping", "2026-11-13", "19:16", "JST", "2026-11-17", "18:00",
                                "JST", "yes", "overdue"]
    assert lines[1].split()[:3] == [str(incident + 1), "web1", "http"] and lines[1].split()[-1] == "open"

    assert cli.main(["report", "show", "--config", config, str(incident)]) == 0
    assert capsys.readouterr().out == (GOLDEN / "host_down.ja.md").read_text(encoding="utf-8")
    assert cli.main(["report", "show", "--config", config, "--lang", "en", str(incident)]) == 0
    assert capsys.readouterr().out == (GOLDEN / "host_down.en.md").read_text(encoding="utf-8")

    out = tmp / "r.html"
    assert cli.main(["report", "render", "--config", config, "--format", "html", "--lang", "en", "-o", str(out),
                     str(incident)]) == 0
    assert out.read_text(encoding="utf-8") == (GOLDEN / "host_down.en.html").read_text(encoding="utf-8")

    assert cli.main(["report", "show", "--config", config, "42"]) == 2
    assert "no incident #42" in capsys.readouterr().err


def test_cli_edit_and_submit(cli_store, capsys):
    config, incident, tmp = cli_store
    assert cli.main(["report", "edit", "--config", config, "--cause", "DIMM failure", str(incident)]) == 0
    assert cli.main(["report", "submit", "--config", config, "--by", "tanaka", str(incident)]) == 0
    capsys.readouterr()
    assert cli.main(["report", "list", "--config", config, "--pending"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # header only: nothing pending
    assert cli.main(["report", "show", "--config", config, str(incident)]) == 0
    shown = capsys.readouterr().out
    assert "DIMM failure" in shown and "【原因】" not in shown and "提出済み（tanaka）" in shown
    assert "【再発防止策】 記入してください" in shown  # prevention still to be written
    store = SQLiteStore(tmp / "state.db")
    try:
        assert [(e.event, e.decision, e.host) for e in asyncio.run(store.incidents.journal(incident_id=incident))][-1] == (
            "report", "submitted", "web1")
    finally:
        asyncio.run(store.close())
    assert cli.main(["report", "submit", "--config", config, "77"]) == 2
    assert cli.main(["report", "edit", "--config", config, str(incident)]) == 2


HOSTS_CONFIG = """daemon: {{state_path: {state}}}
hosts:
  web1: {{address: 192.0.2.10}}
  web2: {{address: 192.0.2.11}}
"""


def test_cli_acts_on_a_host_are_journaled_with_its_incident(cli_store, capsys):
    """Approvals, maintenance, quarantines and releases name the incident they belong to when journaled: the
    one the host's ladder works on, else its newest open one, else none."""
    _, closed, tmp = cli_store  # #1 web1/ping recovered, #2 web1/http open
    config = tmp / "hosts.yaml"
    config.write_text(HOSTS_CONFIG.format(state=tmp / "state.db"))
    store = SQLiteStore(tmp / "state.db")
    http, disk = closed + 1, asyncio.run(store.incidents.open("web1", "disk", "disk", jst(18, 9, 0), jst(18, 9, 0), "disk full"))
    asyncio.run(store.checks.put_escalation("web1", {"incident_id": http, "phase": "awaiting_approval"}))
    asyncio.run(store.control.quarantine("web2", jst(18, 9, 0), "intrusion", "sato"))
    asyncio.run(store.close())
    assert cli.main(["approve", "--config", str(config), "--by", "tanaka", "web1"]) == 0  # the ladder's incident
    store = SQLiteStore(tmp / "state.db")
    asyncio.run(store.checks.put_escalation("web1", {"incident_id": closed, "phase": "idle"}))  # a ladder of a closed incident
    asyncio.run(store.close())
    assert cli.main(["deny", "--config", str(config), "web1"]) == 0  # the newest open one
    assert cli.main(["maintenance", "add", "--config", str(config), "--host", "web1", "--duration", "1h",
                     "--reason", "disk swap"]) == 0
    assert cli.main(["release", "--config", str(config), "web2"]) == 0  # no incident open on web2
    assert cli.main(["quarantine", "--config", str(config), "--yes", "web1"]) == 1  # no BMC or PDU to power off
    capsys.readouterr()
    store = SQLiteStore(tmp / "state.db")
    try:
        assert [(e.event, e.decision, e.host, e.incident_id) for e in asyncio.run(store.incidents.journal(limit=100_000))][-5:] == [
            ("approval", "granted", "web1", http), ("approval", "denied", "web1", disk),
            ("maintenance", "added", "web1", disk), ("quarantine", "released", "web2", None),
            ("decided", "quarantine_power_off", "web1", disk)]
        text = render(asyncio.run(load_report(store, http, CALENDAR)), "md", "en")
        assert "| Emergency contact answered | granted |" in text and "denied" not in text
    finally:
        asyncio.run(store.close())


# -- the last good backup (hosts with a backup contract) ------------------------------------------


BACKUP_CONFIG = """daemon: {{state_path: {state}}}
hosts:
  web1:
    address: 192.0.2.10
    instructions: {{backup_contract: true}}
    checks:
      backup: {{transport: files, where: local, location: /srv/backup/web1, plan: D7}}
"""


def test_report_names_the_last_good_backup_before_the_incident(cli_store, capsys):
    from monitord.shared import lastbackup

    _, incident, tmp = cli_store
    config = tmp / "backup.yaml"
    config.write_text(BACKUP_CONFIG.format(state=tmp / "state.db"))
    directory = tmp / "backup" / "web1" / "backup"
    directory.mkdir(parents=True)
    lastbackup.write_record(directory, "local:/srv/backup/web1", jst(16, 10, 0), [
        {"name": "web1-20261113-0200", "at": jst(13, 2, 0), "size": 52_428_800, "stale_from": jst(14, 7, 0)},
        {"name": "web1-20261114-0200", "at": jst(14, 2, 0), "size": 52_428_800, "stale_from": jst(15, 7, 0)},
    ])
    for lang in ("ja", "en"):
        assert cli.main(["report", "show", "--config", str(config), "--lang", lang, str(incident)]) == 0
        golden(f"host_down_backup.{lang}.md", capsys.readouterr().out)
    assert cli.main(["report", "render", "--config", str(config), "--format", "html", "--lang", "en",
                     str(incident)]) == 0
    assert ("<h2>Last good backup (before the incident)</h2>\n<ul>\n<li>backup: taken 2026-11-13 02:00 JST, "
            "generation web1-20261113-0200, at local:/srv/backup/web1, 50.0 MiB</li>\n</ul>") in capsys.readouterr().out
    text = (GOLDEN / "host_down_backup.en.md").read_text(encoding="utf-8")
    assert ("- backup: taken 2026-11-13 02:00 JST, generation web1-20261113-0200, at local:/srv/backup/web1, "
            "50.0 MiB\n") in text  # the one before the incident, not the newer one
    without = (GOLDEN / "host_down.en.md").read_text(encoding="utf-8")
    assert text.replace("## Last good backup (before the incident)\n\n" + text.split("(before the incident)\n\n")[1]
                        .split("\n\n")[0] + "\n\n", "") == without  # nothing else differs


@pytest.mark.parametrize("backups,lines", [
    ((), ["No backup check is configured: the last backup is unknown."]),
    (("unknown",), ["- backup: the backup check has not run yet"]),
    (("none",), ["- backup: no good backup known (at nas:/b)"]),
    (("stale",), ["- backup: taken 2026-11-10 02:00 JST, generation g10, at nas:/b - STALE: older than the plan allows"]),
])
async def test_report_says_plainly_when_no_backup_is_known_or_it_is_stale(store, backups, lines):
    from monitord.shared.lastbackup import LastBackup

    made = {"unknown": LastBackup("backup", "nas:/b"), "none": LastBackup("backup", "nas:/b", checked_at=jst(13, 9, 0)),
            "stale": LastBackup("backup", "nas:/b", jst(10, 2, 0), "g10", None, True, jst(13, 9, 0))}
    incident = await host_down_incident(store)
    report = await load_report(store, incident, CALENDAR, backups=lambda i: [made[b] for b in backups])
    text = render(report, "md", "en")
    section = text.split("## Last good backup (before the incident)\n\n")[1].split("\n\n")[0]
    assert section.splitlines() == lines
    assert "Last good backup" not in render(await load_report(store, incident, CALENDAR), "md", "en")  # no contract


# -- the templates are package data -----------------------------------------------------------------


def test_every_language_has_every_word():
    """A word missing from one language would only fail when a report needs it: the catalogues
    name the same words, and every word the structure uses exists."""
    folder = Path(__file__).resolve().parent.parent / "monitord" / "templates" / "report"

    def keys(value: object, path: str = "") -> set[str]:
        if not isinstance(value, dict):
            return {path}
        return {k for name, v in value.items() for k in keys(v, f"{path}.{name}")} | {path}

    ja, en = (json.loads((folder / f"words.{lang}.json").read_text(encoding="utf-8")) for lang in ("ja", "en"))
    assert keys(ja) == keys(en)
    used = set(re.findall(r"\bt\.(\w+)", (folder / "body.j2").read_text(encoding="utf-8")))
    used |= set(re.findall(r'\bt\["(\w+)"\]', (folder / "body.j2").read_text(encoding="utf-8")))
    assert len(used) > 50 and used <= set(ja)


def test_every_journal_event_of_an_incident_has_a_name():
    """Each event the code journals reads as words in a report, not as its raw name; only the
    daemon's own rows (start/stop, reloads, store faults, report edits) never join an incident."""
    root = Path(__file__).resolve().parent.parent
    written = {m for package in ("monitord", "probes", "remediation") for path in (root / package).rglob("*.py")
               for m in re.findall(r'\bevent="(\w+)"', path.read_text(encoding="utf-8"))}
    named = json.loads((root / "monitord" / "templates" / "report" / "words.en.json").read_text("utf-8"))["events"]
    assert len(written) >= 15 and written - set(named) == {"daemon", "report", "store"}


async def test_templates_ship_in_the_wheel_and_render_from_an_installed_copy(store, tmp_path):
    """Build the wheel as pip does, install it into an empty directory and render the golden
    reports from there: the templates and words travel with the package."""
    root = Path(__file__).resolve().parent.parent
    source = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    for package in ("monitord", "probes", "remediation"):
        shutil.copytree(root / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(source)],
                   check=True, timeout=600)
    [wheel] = (tmp_path / "dist").glob("monitord-*.whl")
    templates = sorted(p.relative_to(root).as_posix() for p in (root / "monitord" / "templates").rglob("*") if p.is_file())
    assert len(templates) == 12 and set(templates) <= set(zipfile.ZipFile(wheel).namelist())  # report/ and status/
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, timeout=600)

    incident = await host_down_incident(store)
    script = f"""
import asyncio, json, monitord.records.report as r
from monitord.paging.business_calendar import BusinessCalendar
from monitord.records.state import SQLiteStore
store = SQLiteStore({str(tmp_path / "state.db")!r})
report = asyncio.run(r.load_report(store, {incident}, BusinessCalendar()))
print(json.dumps({{"file": r.__file__, "out": {{f"{{lang}}.{{fmt}}": r.render(report, fmt, lang)
                                              for lang in ("ja", "en") for fmt in ("md", "html")}}}}))
"""
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    ran = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    found = json.loads(ran.stdout)
    assert Path(found["file"]).is_relative_to(tmp_path / "site")  # the installed copy, not the checkout
    for variant, text in found["out"].items():
        assert text == (GOLDEN / f"host_down.{variant}").read_text(encoding="utf-8"), variant
