"""The state store's interface: what the daemon, the CLI and the API need from durable state.

A store is four repositories and a unit of work:

- :class:`CheckRepository` (``store.checks``): check states, each host's escalation state, heartbeats;
- :class:`IncidentRepository` (``store.incidents``): incidents, the append-only journal, SLA
  timers, what people added to incident reports;
- :class:`OutboxRepository` (``store.outbox``): the page outbox and the pages escalating through
  their policies' tiers;
- :class:`ControlRepository` (``store.control``): maintenance windows, quarantines, approvals.

Every method is awaitable, so an implementation on a network database (PostgreSQL, asyncpg)
never blocks the event loop. Writes made inside ``async with store.transaction(durable=...)``
by the task that opened it form one transaction, committed (and, when ``durable``, synced)
before the block ends, or not at all; a write outside a block is its own transaction. A
block opened inside another one of the same task joins it. Another task's writes wait until
the block ends. This is the shape a fenced lease needs: a compare-and-set on the host's lease
row and the journal entry of the decision, in one block, commit together or not at all.

Check states written by :meth:`CheckRepository.stage` are the exception: they are kept in
memory and written by :meth:`CheckRepository.flush`, all in one transaction (the scheduler
flushes once per tick), so a crash loses at most the staged states, never a journal entry,
an incident or anything written before an action. Reads see staged states.

:class:`monitord.records.state.SQLiteStore` implements it on an embedded SQLite database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, AsyncContextManager, Callable, Mapping, Protocol

from monitord.records.events import JournalEvent
from monitord.run.checkstate import CheckState
from monitord.shared.results import Heartbeat


class StateError(Exception):
    """The state database cannot be opened, is damaged, or is not ours."""


class StoreLocked(StateError):
    """Another process holds the store's daemon lock."""

    def __init__(self, message: str, pid: int | None):
        super().__init__(message)
        self.pid = pid


class StoreFault(StateError):
    """A write to the state database failed at run time (disk full, I/O error, damage)."""


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One line of the journal: something decided, done or observed, and why.

    ``event`` names what happened: a :class:`~monitord.records.events.JournalEvent` (``detected``,
    ``confirmed``, ``recovered``, an action's ``decided``/``outcome``, ``daemon``...; read back as
    its value). ``ref`` points at the entry an outcome answers.
    """

    ts: float
    event: JournalEvent
    host: str | None = None
    check: str | None = None
    incident_id: int | None = None
    decision: str | None = None
    reason: str | None = None
    outcome: str | None = None
    ref: int | None = None
    detail: Mapping = field(default_factory=dict)
    id: int | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    """A confirmed problem of one check, open until it recovers."""

    id: int
    host: str
    check: str
    kind: str
    opened_at: float
    detected_at: float
    closed_at: float | None
    summary: str


@dataclass(frozen=True, slots=True)
class Maintenance:
    """A maintenance window added from the CLI (config windows live in the config)."""

    id: int
    target: str  # host:NAME, group:NAME or tag:NAME
    starts: float
    ends: float
    reason: str
    created_by: str | None


@dataclass(frozen=True, slots=True)
class ReportRecord:
    """What people added to an incident's report: the engineer's text and when it was sent."""

    incident_id: int
    root_cause: str | None = None
    prevention: str | None = None
    submitted_at: float | None = None
    submitted_by: str | None = None


@dataclass(frozen=True, slots=True)
class PageRecord:
    """A page being escalated through a policy's tiers until acknowledged or closed."""

    id: int
    incident_id: int | None
    host: str | None
    kind: str
    severity: str
    policy: str
    summary: str
    step: int
    opened_at: float
    next_at: float | None
    paged: tuple[tuple[str, str], ...]
    acked_at: float | None
    acked_by: str | None
    ack_sent: bool
    closed_at: float | None


@dataclass(frozen=True, slots=True)
class SlaTimer:
    """An SLA clock: started by a decision, stopped by a CLI report, breached past ``due``."""

    incident_id: int
    name: str
    host: str | None
    started_at: float
    due: float
    stopped_at: float | None
    breached_at: float | None


@dataclass(frozen=True, slots=True)
class StoredCheck:
    """A check's persisted state, plus the incident it has open, if any."""

    state: CheckState
    incident_id: int | None


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """A page in the outbox: ``pending`` until ``delivered`` or given up (``dead``)."""

    id: int
    integration: str
    dedup_key: str
    action: str
    message: str  # JSON
    created_at: float
    due: float
    attempts: int
    state: str
    last_error: str | None
    done_at: float | None


class CheckRepository(Protocol):
    """Check states, each host's escalation state, heartbeats."""

    async def states(self) -> dict[str, StoredCheck]:
        """Every check's state (staged ones included), by check id."""

    async def put(self, check_id: str, state: CheckState, incident_id: int | None) -> None:
        """Store a check's state now (it replaces a staged one)."""

    def stage(self, check_id: str, state: CheckState, incident_id: int | None) -> None:
        """Keep a check's state for the next :meth:`flush` (not durable until then)."""

    def staged(self) -> int:
        """How many check states wait for the next :meth:`flush`."""

    async def flush(self) -> int:
        """Write every staged check state in one transaction; return how many. On a failure
        they stay staged for the next flush."""

    async def forget(self, keep: set[str]) -> int:
        """Drop stored state of checks not in ``keep``; return how many."""

    async def escalations(self, parse: Callable[[dict], Any] = dict) -> dict[str, Any]:
        """Persisted escalation state per host, each passed through ``parse`` (a row it rejects is damaged)."""

    async def put_escalation(self, host: str, state: dict) -> None:
        """Persist a host's escalation state."""

    async def heartbeats(self) -> dict[str, Heartbeat]:
        """The last heartbeat of each host that posted one."""

    async def put_heartbeat(self, host: str, beat: Heartbeat) -> None:
        """Remember a host's latest heartbeat."""


class IncidentRepository(Protocol):
    """Incidents, the append-only journal, SLA timers and incident-report records."""

    async def open(self, host: str, check: str, kind: str, opened_at: float, detected_at: float, summary: str) -> int:
        """Open an incident; return its id."""

    async def close(self, incident_id: int, closed_at: float) -> None:
        """Mark an incident recovered."""

    async def list(self, open_only: bool = False) -> list[Incident]:
        """Incidents, newest first."""

    async def get(self, incident_id: int) -> Incident | None:
        """One incident, or None."""

    async def append(self, entry: JournalEntry) -> int:
        """Append a journal entry; return its id."""

    async def journal(self, incident_id: int | None = None, after_id: int = 0, limit: int = 1000, *,
                      host: str | None = None, since: float | None = None,
                      until: float | None = None) -> list[JournalEntry]:
        """Journal entries in order, optionally for one incident, one host, a time range (inclusive)."""

    async def start_sla(self, incident_id: int, name: str, host: str | None, started_at: float, due: float) -> bool:
        """Start an SLA timer (False if it already exists)."""

    async def update_sla(self, incident_id: int, name: str, **fields: float) -> bool:
        """Set stopped_at or breached_at; False if there is no such timer."""

    async def sla_timers(self, incident_id: int | None = None) -> list[SlaTimer]:
        """SLA timers, oldest first."""

    async def report_records(self) -> dict[int, ReportRecord]:
        """What was added to incident reports, by incident id."""

    async def put_report_record(self, record: ReportRecord) -> None:
        """Store (replace) an incident report's record."""


class OutboxRepository(Protocol):
    """The durable page outbox, and pages escalating through a policy's tiers."""

    async def enqueue(self, integration: str, dedup_key: str, action: str, message: str, now: float,
                      recipients: str = "") -> int | None:
        """Queue a page, due now; None if the same (integration, dedup_key, action, recipients) was queued before."""

    async def due(self, now: float, limit: int = 100) -> list[OutboxItem]:
        """Pending pages due at ``now``, oldest first, skipping any with an older pending page
        of the same integration and dedup key (a resolve never overtakes its trigger)."""

    async def next_due(self) -> float | None:
        """When the earliest pending page not waiting behind another is due, or None."""

    async def failed(self, item_id: int, attempts: int, due: float, error: str) -> None:
        """Record a failed attempt of a pending page and when it is due next."""

    async def done(self, item_id: int, state: str, at: float, attempts: int, error: str | None = None) -> None:
        """Mark a page ``delivered`` or ``dead`` after ``attempts`` attempts."""

    async def items(self, state: str | None = None) -> list[OutboxItem]:
        """Pages in the outbox, optionally in one state, oldest first."""

    async def depth(self) -> dict[str, int]:
        """Pending pages per integration."""

    async def open_page(self, incident_id: int | None, host: str | None, kind: str, severity: str, policy: str,
                        summary: str, now: float) -> int:
        """Start escalating a page; return its id."""

    async def update_page(self, page_id: int, **fields: object) -> None:
        """Change a page's step, next_at, paged, acked_*, ack_sent or closed_at."""

    async def pages(self, open_only: bool = True, incident_id: int | None = None) -> list[PageRecord]:
        """Pages, oldest first."""


class ControlRepository(Protocol):
    """What operators set: maintenance windows, quarantines, answers to approval requests."""

    async def add_maintenance(self, target: str, starts: float, ends: float, reason: str,
                              created_by: str | None) -> int:
        """Add a maintenance window; return its id."""

    async def remove_maintenance(self, window_id: int) -> bool:
        """Remove a maintenance window; False if there was none."""

    async def maintenance(self) -> list[Maintenance]:
        """Every stored maintenance window, oldest first."""

    async def quarantine(self, host: str, since: float, reason: str, by: str | None) -> None:
        """Mark a host quarantined."""

    async def release(self, host: str) -> bool:
        """Lift a quarantine; False if the host was not quarantined."""

    async def quarantined(self) -> dict[str, tuple[float, str]]:
        """Quarantined hosts: since when and why."""

    async def set_approval(self, host: str, answer: str, at: float, by: str | None) -> None:
        """Record the emergency contact's answer for a host's pending action."""

    async def take_approval(self, host: str, since: float) -> str | None:
        """Return and clear an answer recorded at or after ``since``."""


class Store(Protocol):
    """What the daemon needs from durable state: four repositories and a unit of work."""

    checks: CheckRepository
    incidents: IncidentRepository
    outbox: OutboxRepository
    control: ControlRepository

    fault: str | None
    """Why the last write failed, while it keeps failing; None when the store is healthy."""

    def transaction(self, durable: bool = False) -> AsyncContextManager[None]:
        """Group this task's writes into one transaction, committed on exit (synced to disk
        when ``durable``); a write failing for want of space, an I/O error or damage raises
        :class:`StoreFault` and commits nothing of the block."""

    async def probe(self) -> str | None:
        """Can the store be written? Sets or clears :attr:`fault` and returns it."""

    async def close(self) -> None:
        """Write staged check states and release the store."""


async def incident_of_host(store: Store, host: str) -> int | None:
    """The incident an operator's act on ``host`` belongs to (an approval, a quarantine...): the
    open incident its escalation ladder works on, else its newest open incident; None when none
    is open. Journaled with the act, it puts the act in that incident's report."""
    open_ = [i.id for i in await store.incidents.list(open_only=True) if i.host == host]
    ladder = ((await store.checks.escalations()).get(host) or {}).get("incident_id")
    return ladder if ladder in open_ else next(iter(open_), None)
