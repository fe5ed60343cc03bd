"""Journal events are one enum: every ``event`` the code writes is a :class:`JournalEvent`, and the
report reads only those (no spellings nobody writes)."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

from monitord.records import report
from monitord.records.events import JournalEvent
from monitord.run import scheduler

REPO = Path(__file__).resolve().parent.parent


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _strings(node.body) + _strings(node.orelse)
    return []


def written_events() -> dict[str, str]:
    """Every journal event spelled out in monitord's code (``event="..."``, the notifier's
    ``_journal("...", ...)``), with where."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "monitord").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            values = [v for kw in node.keywords if kw.arg == "event" for v in _strings(kw.value)]
            if path.name == "notify.py" and getattr(node.func, "attr", None) == "_journal" and node.args:
                values += _strings(node.args[0])
            for value in values:
                found.setdefault(value, f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_every_event_written_is_a_journal_event():
    found = written_events()
    assert {"decided", "ack", "page_sent", "sla_stopped", "daemon"} <= set(found)  # the scan sees them
    assert {e: where for e, where in found.items() if e not in set(JournalEvent)} == {}
    assert {str(e) for e in scheduler._JOURNALED} <= set(JournalEvent)  # the scheduler journals these by value


def test_the_report_reads_only_written_events():
    words = report._Words("en", dt.timezone.utc)
    assert words.event(JournalEvent.ACK) == words.t["events"]["ack"]
    assert words.event(JournalEvent.SLA_STOPPED) == words.t["events"]["sla_stop"]
    assert words.event(JournalEvent.SLA_BREACH) == words.t["events"]["sla_breached"]
    for never_written in ("acked", "page_acknowledged", "arrived", "sla_met"):
        assert words.event(never_written) == never_written  # shown as is, not read as an ack or a stop
    assert report.ACK_EVENTS == {JournalEvent.ACK} and report.SLA_STOP_EVENTS == {JournalEvent.SLA_STOPPED}
