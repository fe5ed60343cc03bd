"""The guards: what the engine finds out about the world before the ladder decides a step.

Each guard is one small unit: maintenance (:func:`maintenance`), parent down
(:class:`ParentDown`), blast radius (:class:`~monitord.escalation.blastradius.BlastGuard`),
quarantine (:func:`quarantined`), dry-run (a flag), business hours (:func:`off_hours`) and the
store's health (:class:`StoreHealth`); the attempt limits, the grace period and the off-hours
approval rule are the ladder's own pure verdicts (:func:`~monitord.escalation.ladder.limit_verdict`,
:func:`~monitord.escalation.ladder.grace_verdict`, :func:`~monitord.escalation.ladder.approval_verdict`).
:class:`GuardSet` assembles them: cheaply from check states for every decision, with fresh probes
right before a destructive action, and as verdicts for ``explain`` — the same units each time,
so "why not" has one source.
"""

from __future__ import annotations

import dataclasses
import logging

from monitord.config import Config
from monitord.escalation import ladder as esc
from monitord.escalation.blastradius import BlastGuard
from monitord.escalation.fleet import Fleet
from monitord.paging.business_calendar import Calendars
from monitord.records.store import JournalEntry, Store

log = logging.getLogger(__name__)


async def maintenance(config: Config, store: Store, host: str, now: float) -> str | None:
    """The name of a maintenance window covering ``host`` at ``now`` (config or CLI), if any."""
    targets = config.targets_of(host)
    for name, window in config.maintenance.items():
        if window.covers(now) and targets & window.targets():
            return name
    for window in await store.control.maintenance():
        if window.starts <= now < window.ends and window.target in targets:
            return f"#{window.id} {window.reason}".strip()
    return None


async def active_windows(config: Config, store: Store, now: float) -> set[str]:
    """Every maintenance window active at ``now``, by name."""
    active = {f"config:{n}" for n, w in config.maintenance.items() if w.covers(now)}
    return active | {f"cli:{w.id}" for w in await store.control.maintenance() if w.starts <= now < w.ends}


async def quarantined(store: Store, host: str) -> bool:
    """Whether ``host`` is quarantined (powered off and kept off until released)."""
    return host in await store.control.quarantined()


def off_hours(calendars: Calendars, host: str, now: float) -> bool:
    """Whether ``now`` is outside ``host``'s business hours (its customer's, else the default)."""
    return not calendars.for_host(host).is_business_time(now)


class ParentDown:
    """A host behind a parent that is down is unreachable, not down: no action on it."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet

    def seen(self, host: str) -> str | None:
        """An ancestor whose host-down check fails (soft or hard) by its check state, if any."""
        for parent in self.fleet.ancestors(host):
            for spec in self.fleet.host_down_specs(parent):
                check = self.fleet.state(parent, spec.name)
                if check is not None and check.level > 0:
                    return parent
        return None

    async def probed(self, host: str) -> str | None:
        """Probe the ancestors now: a parent may fail before its own checks confirm it."""
        for parent in self.fleet.ancestors(host):
            if any(not r.ok for r in await self.fleet.probe_all(self.fleet.host_down_specs(parent))):
                return parent
        return None


class StoreHealth:
    """Journal first: while the state store cannot be written nothing is decided or done. The
    hosts whose events were dropped meanwhile are held, and caught up with when it recovers."""

    def __init__(self, store: Store):
        self.store = store
        self.held: set[str] = set()

    def verdict(self) -> str | None:
        """Why nothing may be decided now (the store's fault), or None."""
        fault = self.store.fault
        return f"the state store cannot be written: {fault}" if fault is not None else None

    def hold(self, host: str) -> None:
        self.held.add(host)

    def release(self) -> list[str]:
        """The held hosts (sorted), no longer held."""
        held, self.held = sorted(self.held), set()
        return held


class GuardSet:
    """The guards of one configuration, assembled for the ladder and for ``explain``."""

    def __init__(self, *, config: Config, store: Store, fleet: Fleet, calendars: Calendars, blast: BlastGuard,
                 health: StoreHealth, dry_run: bool):
        self.config, self.store, self.calendars, self.blast, self.health = config, store, calendars, blast, health
        self.parents = ParentDown(fleet)
        self.dry_run = dry_run

    async def cheap(self, host: str, now: float) -> esc.Guards:
        """Every guard from what is known now (check states, the store, the last blast verdict)."""
        return esc.Guards(
            maintenance=await maintenance(self.config, self.store, host, now),
            parent_down=self.parents.seen(host),
            quarantined=await quarantined(self.store, host),
            off_hours=off_hours(self.calendars, host, now),
            dry_run=self.dry_run,
            blast_radius=self.blast.active,
        )

    async def full(self, host: str, guards: esc.Guards) -> esc.Guards:
        """``guards`` with the guards that need probes, looked at again right before a destructive action."""
        parent = guards.parent_down or await self.parents.probed(host)
        return dataclasses.replace(guards, parent_down=parent, blast_radius=await self.blast.evaluate())

    async def verdicts(self, host: str, what: esc.Step, state: esc.HostState, policy: esc.Policy,
                       now: float) -> list[tuple[str, str | None]]:
        """Every guard's verdict on ``what`` for ``host`` now, in the order they are asked: why it
        blocks, or None (it passes). Nothing is probed."""
        guards = await self.cheap(host, now)
        verdicts = [(name, block.why if block else None) for name, block in esc.guard_verdicts(what, policy, guards)]
        return verdicts + [("limit", esc.limit_verdict(what, state, policy, now)),
                           ("grace", esc.grace_verdict(state, now)),
                           ("off_hours_approval", esc.approval_verdict(what, policy, guards)),
                           ("store_health", self.health.verdict())]

    async def log_maintenance(self, before: set[str], now: float) -> set[str]:
        """Journal the windows that ended since ``before`` was taken (the start is logged); the
        windows active now."""
        active = await active_windows(self.config, self.store, now)
        for name in sorted(active - before):
            log.info("maintenance window %s started", name)
        for name in sorted(before - active):
            log.info("maintenance window %s ended", name)
            async with self.store.transaction():
                await self.store.incidents.append(JournalEntry(ts=now, event="maintenance", decision="ended", reason=name))
        return active
