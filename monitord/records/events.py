"""What a journal entry records: every ``event`` monitord writes, one enum (a StrEnum, so the
stored strings are its values). Reports read exactly these; ``tests/test_journal_events.py``
holds every ``event=`` the code writes to this list."""

from __future__ import annotations

import enum


class JournalEvent(enum.StrEnum):
    # a check's state (the scheduler; run.checkstate.Event's values)
    DETECTED = "detected"
    CONFIRMED = "confirmed"
    CHANGED = "changed"
    SOFT_RECOVERY = "soft_recovery"
    RECOVERED = "recovered"
    WITHDRAWN = "withdrawn"  # the check left the configuration
    # the escalation engine
    DECIDED = "decided"
    OUTCOME = "outcome"
    BLOCKED = "blocked"
    DEFERRED = "deferred"
    CANCELLED = "cancelled"
    RECONCILED = "reconciled"  # an action in flight at a restart, read back
    RESOLVED = "resolved"
    NOTE = "note"
    HELD = "held"  # a notice or page held during a blast-radius episode
    # paging and the customer
    PAGE = "page"
    PAGE_SENT = "page_sent"
    PAGE_DELIVERY = "page_delivery"
    PAGE_EXHAUSTED = "page_exhausted"
    PAGE_RESOLVED = "page_resolved"
    PAGE_UNROUTED = "page_unrouted"
    VENDOR_ESCALATED = "vendor_escalated"
    NOTICE = "notice"
    ACK = "ack"
    SLA_STARTED = "sla_started"
    SLA_STOPPED = "sla_stopped"
    SLA_BREACH = "sla_breach"
    # operators' acts and the daemon
    APPROVAL = "approval"
    MAINTENANCE = "maintenance"
    QUARANTINE = "quarantine"
    REPORT = "report"
    DAEMON = "daemon"
    STORE = "store"
