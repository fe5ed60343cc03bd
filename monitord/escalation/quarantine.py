"""Quarantine (contract 000 不正侵入): stop a compromised server at once and keep it stopped.

The quarantine is recorded first (durably), so the daemon blocks every automatic action on
the host, including powering it back on: its ladder guard holds new actions, and the one power
path (:mod:`monitord.escalation.power`) stops one already under way, the second half of a power
cycle included. Then the host is powered off through its power drivers in fallback order
(BMC, hypervisor, PDU outlet). ``monitord release HOST`` lifts the block.

When the daemon runs, the CLI asks it (the API) and the daemon's engine does this under the
host's lock, between two actions of a ladder; otherwise the CLI does it on the store directly.
"""

from __future__ import annotations

import time

from monitord.config import Config, HostConfig
from monitord.edge.metrics import Metrics
from monitord.paging.business_calendar import Calendars
from monitord.paging.notify import Notifier
from monitord.paging.outbox import Outbox
from monitord.records.stores import open_store
from monitord.records.store import JournalEntry, Store, incident_of_host
from monitord.shared.clock import SystemClock
from monitord.escalation import power
from monitord.shared.power import ActionError, PowerAction
from remediation.drivers import Drivers


async def quarantine(config: Config, host: str, reason: str, by: str | None,
                     drivers: Drivers | None = None) -> tuple[bool, str]:
    """Record the quarantine, then power ``host`` off, on the store directly (no daemon runs);
    return (powered off, summary)."""
    store = await open_store(config.daemon)
    try:
        decided = await record(store, config, host, reason, by)
        return await power_off(store, config, host, decided, drivers or Drivers())
    finally:
        await store.close()


Decided = tuple[int, int | None]
"""A quarantine's journaled decision: its entry id, and the incident it belongs to (or None)."""


async def record(store: Store, config: Config, host: str, reason: str, by: str | None) -> Decided:
    """Record the quarantine and the decision to power off, durably, in the report of the
    incident it ends (:func:`incident_of_host`)."""
    now = time.time()
    incident = await incident_of_host(store, host)
    async with store.transaction(durable=True):
        await store.control.quarantine(host, now, reason, by)
        decided = await store.incidents.append(JournalEntry(ts=now, event="decided", host=host, incident_id=incident,
                                                            decision="quarantine_power_off", reason=reason,
                                                            detail={"by": by, "drivers": list(config.hosts[host].power_drivers())}))
    return decided, incident


async def power_off(store: Store, config: Config, host: str, decision: Decided, drivers: Drivers) -> tuple[bool, str]:
    """Power the quarantined ``host`` off through each of its drivers in turn until one works,
    journaling each outcome against the ``decision``."""
    decided, incident = decision
    h = _emergency(config.hosts[host])
    names = list(h.power_drivers())
    if not names:
        return False, f"{host} quarantined, but it has no BMC, VM or PDU configured: power it off by hand"
    failures = []
    for name in names:
        try:
            outcome = await power.change(drivers, store, h, host, name, PowerAction.OFF, power.timings(config, host))
        except ActionError as exc:
            failures.append(f"{name}: {exc.summary}")
            async with store.transaction(durable=True):
                await store.incidents.append(JournalEntry(ts=time.time(), event="outcome", host=host, incident_id=incident,
                                                          decision="quarantine_power_off", outcome="failed",
                                                          reason=str(exc.reason), ref=decided,
                                                          detail={"driver": name, "error": exc.summary}))
            continue
        async with store.transaction(durable=True):
            await store.incidents.append(JournalEntry(ts=time.time(), event="outcome", host=host, incident_id=incident,
                                                      decision="quarantine_power_off", outcome="ok", ref=decided,
                                                      detail={"driver": name, "steps": list(outcome.steps)}))
        done = "powered off" if outcome.acted else "was already off"
        when = await _announce_reinstall(config, store, host)
        return True, (f"{host} quarantined and {done} (through {name}); reinstall announced for "
                      f"{when} (business hours); `monitord release {host}` lifts it")
    return False, f"{host} quarantined but NOT powered off: {'; '.join(failures)}"


async def release(store: Store, host: str, by: str | None) -> bool:
    """Lift the quarantine of ``host`` (it is not powered on); False if it was not quarantined."""
    if not await store.control.release(host):
        return False
    async with store.transaction(durable=True):
        await store.incidents.append(JournalEntry(ts=time.time(), event="quarantine", host=host, decision="released", detail={"by": by}))
    return True
def _emergency(h: HostConfig) -> HostConfig:
    """The host as quarantine powers it off: at once (the contract's emergency power-off of a
    compromised server), never through a guest's graceful shutdown, which runs its code on."""
    if h.vm is None or h.vm.shutdown_timeout is None:
        return h
    return h.model_copy(update={"vm": h.vm.model_copy(update={"shutdown_timeout": None})})


async def _announce_reinstall(config: Config, store: Store, host: str) -> str:
    """The reinstall after an intrusion is business-hours work: schedule it and tell the customer.

    The notice goes into the outbox; the running daemon's dispatcher delivers it.
    """
    notifier = Notifier(config=config, store=store, outbox=Outbox(store), clock=SystemClock(), metrics=Metrics())
    when = Calendars(config).for_host(host).next_business_moment(time.time())
    await notifier.notice(host, "work", "OS reinstall after an intrusion (server stopped and quarantined)", None, when)
    return notifier.format_time(when)

