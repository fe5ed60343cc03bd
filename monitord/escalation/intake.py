"""Intake: what a check event means for the host's escalation.

The scheduler tells the engine when a check is confirmed down, changes status while down, or
recovers (:meth:`Intake.on_check_event`). A confirmed problem becomes one of: a business-hours
ticket (a failed drive, a backup failed twice), a capacity notice to the customer, a warning page
(people decide: some packet loss, a certificate about to expire), or a ladder event
(:class:`~monitord.escalation.ladder.Confirmed`). A host's episode is the incident its open ladder
owns: a second failing check of the host joins it, and only the ladder's verification closes it.
An event that waited (for the host's lock, for the end of a grace period) is checked against the
check's state when it is handled (:meth:`Intake.stale`); a stale one is cancelled, journaled.
A service confirmed while a host-down check of its host fails but is not confirmed yet waits
for that check to settle (:meth:`Intake.settling`): the host may be going down. If it is, the
service joins the host's ladder and incident; if the host-down check recovers, the service's
ladder starts then, from the current check states (:meth:`Intake.still_down`).
A host in a maintenance window is silent too: its customer notices and pages are held,
journaled once per kind and incident (:meth:`Intake.hold`), and sent when the window ends while
the check still fails (:meth:`Intake.after_maintenance`; a ladder's are, as it starts again).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Coroutine, Iterator

from monitord.config import CheckSpec, Config
from monitord.escalation import ladder as esc
from monitord.escalation.blastradius import BlastGuard
from monitord.escalation.fleet import Fleet, is_host_down_check
from monitord.escalation.guards import maintenance
from monitord.paging.business_calendar import Calendars
from monitord.paging.notify import Notifier
from monitord.paging.oncall import PageKind
from monitord.records.store import JournalEntry, Store
from monitord.run.checkstate import Event as CheckEvent
from monitord.shared.clock import Clock
from monitord.shared.results import Reason, Result, Status, Ticket

log = logging.getLogger(__name__)

HELD_FOR_MAINTENANCE = "held for maintenance window"

def actionable(result: Result) -> bool:
    """Whether a confirmed result may start a ladder: the thing is down (critical, and not a
    threshold verdict such as partial packet loss or a certificate about to expire, nor a
    refused login, e.g. a wrong database password: the service answered, and a restart would
    not fix our credentials)."""
    return result.status is Status.CRITICAL and result.reason not in (Reason.THRESHOLD, Reason.AUTH)


def notice_kind(spec: CheckSpec, result: Result) -> str:
    """Which customer notice a confirmed problem of ``spec`` is: a capacity threshold or a failure."""
    return "threshold" if result.reason is Reason.THRESHOLD and spec.kind.threshold_notice else "failure"


class Intake:
    """Turns check events into ladder events, notices, warnings and tickets.

    ``state(host)`` is the host's escalation state; ``start(host, confirmed, when, notice)``
    runs a ladder for a confirmed failure in the background (after :meth:`announce`);
    ``submit(host, event)`` feeds the host's ladder; ``spawn(work, name)`` runs background work.
    """

    def __init__(self, *, config: Config, store: Store, clock: Clock, notifier: Notifier, blast: BlastGuard,
                 calendars: Calendars, fleet: Fleet, state: Callable[[str], esc.HostState],
                 start: Callable[[str, esc.Confirmed, float, bool], None],
                 submit: Callable[[str, esc.Event], None], spawn: Callable[[Coroutine[Any, Any, Any], str], None]):
        self.config, self.store, self.clock, self.notifier, self.blast = config, store, clock, notifier, blast
        self.calendars, self.fleet, self.state = calendars, fleet, state
        self.start, self.submit, self.spawn = start, submit, spawn

    def episode(self, host: str) -> int | None:
        """The incident of ``host``'s open ladder: other checks of the host join it, and only
        the ladder's verification closes it."""
        state = self.state(host)
        return state.incident_id if state.ladder is not None and state.phase is not esc.Phase.IDLE else None

    async def on_check_event(self, spec: CheckSpec, event: CheckEvent, result: Result, incident_id: int | None) -> None:
        host_down = is_host_down_check(spec)
        notice = notice_kind(spec, result)
        joined = incident_id is not None and incident_id == self.episode(spec.host)
        if event in (CheckEvent.CONFIRMED, CheckEvent.CHANGED):
            if result.ticket is not None:
                await self.ticket(result.ticket, spec, result, incident_id)
                return  # business-hours work, announced; never a reset
            if notice == "threshold":
                # contact the customer first; operations hear of it too (a warning, routed by policy)
                summary = f"{spec.name}: {result.summary}"
                if not await self.hold(spec.host, notice, summary, incident_id, notice=True):
                    await self.notifier.notice(spec.host, notice, summary, incident_id, result.started_at)
                if not await self.hold(spec.host, PageKind.THRESHOLD, summary, incident_id):
                    await self.notifier.page(spec.host, PageKind.THRESHOLD, f"{spec.host}/{summary}", incident_id)
            elif not actionable(result):
                # e.g. some packet loss, a certificate about to expire: people decide, no ladder
                await self.warning(spec, result, incident_id)
            elif not host_down and self.episode(spec.host) is None and (pending := self.settling(spec.host)):
                await self.defer(spec, pending, incident_id)
            else:
                # a host-down confirmation settles the services that waited for it: they join its ladder
                waited = [c for c in self.confirmations(spec.host) if not c[0].host_down] if host_down and self.episode(spec.host) is None else []
                self.start(spec.host, esc.Confirmed(spec.name, host_down, incident_id, result.summary),
                           result.started_at, not joined)
                for confirmed, when in waited:
                    self.start(spec.host, confirmed, when, False)
        elif event is CheckEvent.RECOVERED:
            if incident_id is not None and not joined:
                await self.close_incident(spec.host, incident_id, result.started_at, notice != "threshold")
            self.submit(spec.host, esc.Recovered(spec.name, host_down))
            if host_down and self.blast.active:
                self.spawn(self.blast.evaluate(), "blast radius")  # it may clear now

    def settling(self, host: str) -> str | None:
        """A host-down check of ``host`` that fails but is not confirmed yet (soft), if any."""
        for spec in self.fleet.host_down_specs(host):
            check = self.fleet.state(host, spec.name)
            if check is not None and check.level == 1:
                return spec.name
        return None

    def waiting(self, host: str) -> int | None:
        """The incident of a service confirmation of ``host`` deferred while a host-down check
        settles (see :meth:`settling`): the host-down check confirming now joins it, one incident."""
        if self.settling(host) is None:
            return None
        return next((self.fleet.checks.incident_of(spec.id) for spec in self.fleet.of_host(host)
                     if not is_host_down_check(spec) and self.confirmed_down(host, spec)), None)

    def confirmed_down(self, host: str, spec: CheckSpec) -> bool:
        """Whether ``spec``'s check is confirmed down (hard) with a result that may start a ladder."""
        check = self.fleet.state(host, spec.name)
        return (check is not None and check.level == 2 and check.last_result is not None
                and actionable(check.last_result) and notice_kind(spec, check.last_result) != "threshold")

    async def defer(self, spec: CheckSpec, pending: str, incident_id: int | None) -> None:
        """Journal that ``spec``'s confirmation waits for the host-down check ``pending`` to settle."""
        why = f"{spec.name} confirmed while {pending} fails but is not confirmed: the host may be going down; waits for {pending} to settle"
        async with self.store.transaction(durable=True):
            await self.store.incidents.append(JournalEntry(ts=self.clock.time(), event="deferred", host=spec.host,
                                                           check=spec.name, incident_id=incident_id,
                                                           decision="host_down_settling", reason=why))
        log.info("%s: %s", spec.host, why)

    async def warning(self, spec: CheckSpec, result: Result, incident_id: int | None) -> None:
        """A warning pages people, unless the host's ladder (or the grace after its last action)
        is in progress: then it is part of that incident, journaled there."""
        summary = f"{spec.host}/{spec.name}: {result.summary}"
        episode = self.episode(spec.host)
        if episode is not None or esc.grace_verdict(self.state(spec.host), self.clock.time()):
            async with self.store.transaction():
                await self.store.incidents.append(JournalEntry(
                    ts=self.clock.time(), event="note", host=spec.host, check=spec.name,
                    incident_id=episode or incident_id, reason=f"warning folded into the ladder in progress: {summary}"))
        elif not await self.hold(spec.host, PageKind.CHECK_WARNING, summary, incident_id):
            await self.notifier.page(spec.host, PageKind.CHECK_WARNING, summary, incident_id)

    async def ticket(self, kind: Ticket, spec: CheckSpec, result: Result, incident_id: int | None) -> None:
        """A failed drive or part, a backup failed twice in a row: schedule the work into the next
        business window and announce it."""
        when = self.calendars.for_host(spec.host).next_business_moment(self.clock.time())
        if not await self.hold(spec.host, PageKind(kind), result.summary, incident_id):
            await self.notifier.page(spec.host, PageKind(kind), f"{spec.host}: {result.summary}", incident_id, {"scheduled": when})
        if not await self.hold(spec.host, "work", result.summary, incident_id, notice=True):
            await self.notifier.notice(spec.host, "work", result.summary, incident_id, when)

    async def announce(self, host: str, event: esc.Confirmed, when: float, notice: bool) -> bool:
        """A confirmed failure, before its ladder runs: a host down is first seen through the
        blast-radius guard (is the monitor's side broken? does the host answer its fresh probe?);
        then the customer is told (unless the guard holds notices, or this incident was announced
        already). False: the confirmation is stale (cancelled, journaled)."""
        if event.host_down:
            await self.blast.evaluate()
            if self.blast.answered.get(host, False):
                await self.cancelled(host, event, f"{host} answers now: the confirmation of {event.check} is stale")
                return False
        if notice and event.incident_id is not None and not await self.noticed(event.incident_id):
            summary = f"{event.check}: {event.summary}"
            if not await self.hold(host, "failure", summary, event.incident_id, notice=True):
                await self.notifier.notice(host, "failure", summary, event.incident_id, when)
        return True

    async def hold(self, host: str, what: str, summary: str, incident_id: int | None, notice: bool = False) -> bool:
        """Whether the ``what`` page (customer notice, if ``notice``) about ``host`` must be held
        now: during a blast-radius episode (journaled by the guard), or while a maintenance window
        covers the host (journaled once per kind and incident, as ``<what>`` or ``<what> notice``)."""
        if await self.blast.hold(host, what, summary):
            return True
        window = await maintenance(self.config, self.store, host, self.clock.time())
        if window is None:
            return False
        what = f"{what} notice" if notice else str(what)
        if incident_id is None or not await self.held(incident_id, what):
            async with self.store.transaction():
                await self.store.incidents.append(JournalEntry(
                    ts=self.clock.time(), event="held", host=host, decision=what, incident_id=incident_id,
                    reason=f"{HELD_FOR_MAINTENANCE} {window}: {summary}"))
        return True

    async def held(self, incident_id: int, what: str) -> bool:
        """Whether a ``what`` notice or page of ``incident_id`` was held for maintenance."""
        return any(e.event == "held" and e.decision == what and (e.reason or "").startswith(HELD_FOR_MAINTENANCE)
                   for e in await self.store.incidents.journal(incident_id=incident_id))

    async def unsent(self, incident_id: int) -> bool:
        """Whether a notice or page of ``incident_id`` was held for maintenance and nothing was
        sent since (so a second window ending does not send it twice)."""
        pending = False
        for e in await self.store.incidents.journal(incident_id=incident_id):
            if e.event == "held" and (e.reason or "").startswith(HELD_FOR_MAINTENANCE):
                pending = True
            elif e.event in ("notice", "page_sent", "page_unrouted"):
                pending = False
        return pending

    async def after_maintenance(self) -> None:
        """Windows ended: a check still confirmed failing whose notices or pages were held for
        maintenance is handled again, once (a ladder's confirmations start again by themselves,
        :meth:`still_down`)."""
        for (host, name), spec in self.fleet.specs.items():
            check = self.fleet.state(host, name)
            incident_id = self.fleet.checks.incident_of(spec.id)
            if (check is None or check.level != 2 or check.last_result is None or incident_id is None
                    or (actionable(check.last_result) and check.last_result.ticket is None
                        and notice_kind(spec, check.last_result) != "threshold")):
                continue
            if await self.unsent(incident_id) and await maintenance(self.config, self.store, host, self.clock.time()) is None:
                await self.on_check_event(spec, CheckEvent.CONFIRMED, check.last_result, incident_id)

    async def noticed(self, incident_id: int, what: str = "failure") -> bool:
        """Whether the customer was sent the ``what`` notice of ``incident_id``."""
        return any(e.event == "notice" and e.decision == what for e in await self.store.incidents.journal(incident_id=incident_id))

    async def close_incident(self, host: str, incident_id: int, when: float, recovery_notice: bool = True) -> None:
        """The incident is over: close it, resolve its open pages, and tell the customer who
        was told of the failure (once; the ladder's verification may have done all this already)."""
        async with self.store.transaction(durable=True):
            await self.store.incidents.close(incident_id, when)
        await self.notifier.resolve(incident_id)
        if recovery_notice and await self.noticed(incident_id) and not await self.noticed(incident_id, "recovery"):
            await self.notifier.notice(host, "recovery", host, incident_id, when)

    def still_down(self, blast_holds: bool) -> Iterator[tuple[str, esc.Confirmed, float]]:
        """Hosts still failing but idle (blocked, deferred), each with the confirmation to feed its
        ladder again: guards may have lifted. Hosts blocked by the blast-radius guard wait quietly
        while it holds; a service waits quietly while a host-down check of its host settles."""
        for host in self.config.hosts:
            state = self.state(host)
            if state.phase is not esc.Phase.IDLE or state.ladder is not None:
                continue
            if state.blocked == "blast_radius" and blast_holds:
                continue
            for confirmed, when in self.confirmations(host):
                yield host, confirmed, when

    def confirmations(self, host: str) -> Iterator[tuple[esc.Confirmed, float]]:
        """A confirmation (and its time) for every check of ``host`` that is confirmed down and
        may start a ladder; a service's only once no host-down check of the host settles."""
        settling = self.settling(host)
        for spec in self.fleet.of_host(host):
            host_down = is_host_down_check(spec)
            if (host_down or (spec.params.restart is not None and settling is None)) and self.confirmed_down(host, spec):
                result = self.fleet.state(host, spec.name).last_result
                yield (esc.Confirmed(spec.name, host_down, self.fleet.checks.incident_of(spec.id), result.summary),
                       result.started_at)

    async def stale(self, host: str, event: esc.Event) -> str | None:
        """Why a check event no longer holds now that it is handled (it waited for the host's
        lock, or for the end of a grace period), or None."""
        if isinstance(event, esc.Done) or (isinstance(event, esc.Recovered) and self.state(host).ladder is None):
            return None  # an action's outcome is fresh; a recovery with no ladder to feed changes nothing
        check = self.fleet.state(host, event.check)
        if check is None:
            return None
        if isinstance(event, esc.Confirmed) and not (check.level == 2 and check.last_result is not None
                                                     and actionable(check.last_result)):
            return f"{event.check} is no longer confirmed down ({check.status})"
        if isinstance(event, esc.Confirmed) and event.incident_id is not None and await self.over(event.incident_id):
            return f"incident {event.incident_id} of {event.check} is over already"
        if isinstance(event, esc.Recovered) and check.status is not Status.OK:
            return f"{event.check} failed again ({check.status})"
        return None

    async def over(self, incident_id: int) -> bool:
        """Whether incident ``incident_id`` was closed (e.g. by a ladder's verification)."""
        incident = await self.store.incidents.get(incident_id)
        return incident is not None and incident.closed_at is not None

    async def cancelled(self, host: str, event: esc.Event, why: str | None) -> bool:
        """Journal that ``event``'s decision is cancelled because ``why`` (None: it is not)."""
        if why is None:
            return False
        async with self.store.transaction(durable=True):
            await self.store.incidents.append(JournalEntry(ts=self.clock.time(), event="cancelled", host=host,
                                                           check=getattr(event, "check", None), incident_id=self.state(host).incident_id,
                                                           decision=type(event).__name__.lower(), reason=why))
        log.info("%s: cancelled: %s", host, why)
        return True
