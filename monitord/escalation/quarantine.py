"""Quarantine (contract 000 不正侵入): stop a compromised server at once and keep it stopped.

The quarantine is recorded first (durably), so the daemon blocks every automatic action on
the host, including powering it back on; then the host is powered off through its BMC,
falling back to its PDU outlet. ``monitord release HOST`` lifts the block.
"""

from __future__ import annotations

import time

from monitord.paging.business_calendar import Calendars
from monitord.shared.clock import SystemClock
from monitord.config import Config, HostConfig
from monitord.edge.metrics import Metrics
from monitord.paging.notify import Notifier
from monitord.paging.outbox import Outbox
from monitord.records.state import JournalEntry, SQLiteStore, incident_of_host
from monitord.shared.power import ActionError, PowerAction, PowerTimings, power_change
from remediation.drivers import Drivers


async def quarantine(config: Config, host: str, reason: str, by: str | None,
                     drivers: Drivers | None = None) -> tuple[bool, str]:
    """Record the quarantine, then power ``host`` off; return (powered off, summary)."""
    h = _emergency(config.hosts[host])
    drivers = drivers or Drivers()
    r = config.remediation(host)
    timings = PowerTimings(power_wait=r["power_wait"], power_timeout=r["power_timeout"], retries=r["power_retries"])
    names = list(h.power_drivers())
    store = SQLiteStore(config.daemon.state_path)
    try:
        now = time.time()
        incident = incident_of_host(store, host)  # the quarantine is in the report of the incident it ends
        with store.transaction(durable=True):
            store.quarantine(host, now, reason, by)
            decided = store.append(JournalEntry(ts=now, event="decided", host=host, incident_id=incident,
                                                decision="quarantine_power_off", reason=reason,
                                                detail={"by": by, "drivers": names}))
        if not names:
            return False, f"{host} quarantined, but it has no BMC, VM or PDU configured: power it off by hand"
        failures = []
        for name in names:
            try:
                async with drivers.power(name, h.power_blocks()[name]) as driver:
                    outcome = await power_change(driver, PowerAction.OFF, timings)
            except ActionError as exc:
                failures.append(f"{name}: {exc.summary}")
                with store.transaction(durable=True):
                    store.append(JournalEntry(ts=time.time(), event="outcome", host=host, incident_id=incident,
                                              decision="quarantine_power_off", outcome="failed",
                                              reason=str(exc.reason), ref=decided,
                                              detail={"driver": name, "error": exc.summary}))
                continue
            with store.transaction(durable=True):
                store.append(JournalEntry(ts=time.time(), event="outcome", host=host, incident_id=incident,
                                          decision="quarantine_power_off", outcome="ok", ref=decided,
                                          detail={"driver": name, "steps": list(outcome.steps)}))
            done = "powered off" if outcome.acted else "was already off"
            when = _announce_reinstall(config, store, host)
            return True, (f"{host} quarantined and {done} (through {name}); reinstall announced for "
                          f"{when} (business hours); `monitord release {host}` lifts it")
        return False, f"{host} quarantined but NOT powered off: {'; '.join(failures)}"
    finally:
        store.close()


def _emergency(h: HostConfig) -> HostConfig:
    """The host as quarantine powers it off: at once (the contract's emergency power-off of a
    compromised server), never through a guest's graceful shutdown, which runs its code on."""
    if h.vm is None or h.vm.shutdown_timeout is None:
        return h
    return h.model_copy(update={"vm": h.vm.model_copy(update={"shutdown_timeout": None})})


def _announce_reinstall(config: Config, store: SQLiteStore, host: str) -> str:
    """The reinstall after an intrusion is business-hours work: schedule it and tell the customer.

    The notice goes into the outbox; the running daemon's dispatcher delivers it.
    """
    notifier = Notifier(config=config, store=store, outbox=Outbox(store), clock=SystemClock(), metrics=Metrics())
    when = Calendars(config).for_host(host).next_business_moment(time.time())
    notifier.notice(host, "work", "OS reinstall after an intrusion (server stopped and quarantined)", None, when)
    return notifier.format_time(when)

