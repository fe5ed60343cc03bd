"""The blast-radius guard: when many hosts are down at once, the monitor's own side (its
uplink, a bridge, its resolver) is the likelier fault, so no power action is taken.

It counts hosts that are down NOW: hosts whose host-down check currently fails, where a
failure that began within ``window`` (or a canary) is probed again at the moment of the
decision; an older failure is taken from the check's state, so a 10,000-host fleet is not
re-pinged for every power action. An outage of the monitor's side is an incident of its
own: opened and paged once per episode (the page repeats per its policy), resolved when the
guard clears. While it lasts, per-host customer notices and per-host pages are held; blocked
hosts are not re-read or re-journaled until it clears.

:func:`assess` and :class:`Episode` are pure; :class:`BlastGuard` does the probing, paging
and journaling through the callables and objects it is given.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Literal

from monitord.shared.clock import Clock
from monitord.config import BlastRadius
from monitord.edge.metrics import Metrics
from monitord.paging.notify import Notifier
from monitord.paging.oncall import PageKind
from monitord.records.store import JournalEntry, Store

log = logging.getLogger(__name__)

MONITOR = "(monitor)"
"""The incident's "host": the monitor's own side."""


def assess(down: set[str], total: int, config: BlastRadius, canary_down: str | None = None) -> str | None:
    """Why the monitor's side looks broken, or None: a canary down, or too many hosts down now."""
    if canary_down is not None:
        return f"reference target {canary_down} is not answering"
    total = max(1, total)
    if len(down) > config.max_down_hosts or (len(down) >= 2 and 100 * len(down) / total > config.max_down_percent):
        return f"{len(down)} of {total} hosts down now"
    return None


def down_now(failing: dict[str, float], answered: dict[str, bool]) -> set[str]:
    """Hosts down now: those failing by their check states, unless a fresh probe answered;
    plus those a fresh probe found down. ``failing`` maps host to when its failure began."""
    return {h for h in failing if not answered.get(h, False)} | {h for h, ok in answered.items() if not ok}


def to_probe(failing: dict[str, float], now: float, window: float) -> set[str]:
    """The failing hosts whose failure is recent enough to be worth a fresh probe."""
    return {h for h, since in failing.items() if now - since <= window}


@dataclass(slots=True)
class Episode:
    """One outage of the monitor's side, from the first verdict to the first all-clear."""

    why: str | None = None
    incident_id: int | None = None
    since: float = 0.0

    @property
    def active(self) -> bool:
        return self.why is not None

    def update(self, why: str | None, now: float) -> Literal["started", "cleared"] | None:
        """Take a new verdict; say whether an episode started or ended (None: nothing changed)."""
        if why is not None and self.why is None:
            self.why, self.since = why, now
            return "started"
        if why is None and self.why is not None:
            self.why = None
            return "cleared"
        if why is not None:
            self.why = why  # still active: the newest reason, quietly
        return None


class BlastGuard:
    """Evaluates the guard (concurrent callers share one evaluation) and runs its incident.

    ``failing()`` gives the hosts whose host-down checks fail now (host -> failure start);
    ``probe(host)`` probes a host's host-down checks now (True: it answers); ``on_clear()`` is
    called once when an episode ends.
    """

    def __init__(self, *, config: Callable[[], tuple[BlastRadius, int]], store: Store, notifier: Notifier,
                 metrics: Metrics, clock: Clock, failing: Callable[[], dict[str, float]],
                 probe: Callable[[str], Awaitable[bool]], on_clear: Callable[[], None] = lambda: None):
        self._config, self.store, self.notifier, self.metrics, self.clock = config, store, notifier, metrics, clock
        self._failing, self._probe, self._on_clear = failing, probe, on_clear
        self.episode = Episode()
        self.answered: dict[str, bool] = {}
        """What the last evaluation's fresh probes found (host -> it answered)."""
        self._running: asyncio.Future[str | None] | None = None

    async def restore(self) -> None:
        """Take up an episode that was open when the daemon stopped: held until an evaluation clears it."""
        resumed = [i for i in await self.store.incidents.list(open_only=True) if i.host == MONITOR]
        if resumed:
            self.episode = Episode("resumed after a restart", resumed[0].id, resumed[0].opened_at)

    @property
    def active(self) -> str | None:
        """Why the guard holds now (from the last evaluation), or None."""
        return self.episode.why

    async def evaluate(self) -> str | None:
        """Probe canaries and recently failed hosts now and decide; None when it is clear."""
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._evaluate())
        return await asyncio.shield(self._running)

    async def _evaluate(self) -> str | None:
        br, total = self._config()
        canary_results = await asyncio.gather(*(self._probe(c) for c in br.canaries))
        canary_down = next((c for c, ok in zip(br.canaries, canary_results) if not ok), None)
        answered: dict[str, bool] = {}
        if canary_down is None:
            failing = self._failing()
            hosts = sorted(to_probe(failing, self.clock.time(), br.window))
            answered = dict(zip(hosts, await asyncio.gather(*(self._probe(h) for h in hosts))))
            why = assess(down_now(failing, answered), total, br)
        else:
            why = assess(set(), total, br, canary_down)
        self.answered = answered
        await self._record(why)
        return why

    async def _record(self, why: str | None) -> None:
        now = self.clock.time()
        change = self.episode.update(why, now)
        if change == "started":
            async with self.store.transaction(durable=True):
                incident = await self.store.incidents.open(MONITOR, "blast_radius", "blast_radius", now, now, why or "")
                await self.store.incidents.append(JournalEntry(ts=now, event="page", decision=PageKind.BLAST_RADIUS, incident_id=incident,
                                                               reason=why, detail={"level": 0}))
            self.episode.incident_id = incident
            self.metrics.escalation_pages.labels(PageKind.BLAST_RADIUS).inc()
            log.error("PAGE blast_radius: %s: no power actions, customer notices and host pages held until it clears",
                      why)
            await self.notifier.page(None, PageKind.BLAST_RADIUS, f"monitor-side failure suspected: {why}; power actions stopped",
                                     incident)
        elif change == "cleared":
            incident, self.episode.incident_id = self.episode.incident_id, None
            async with self.store.transaction(durable=True):
                await self.store.incidents.append(JournalEntry(ts=now, event="resolved", decision="blast_radius", incident_id=incident,
                                                               reason=f"blast-radius guard clear after {now - self.episode.since:.0f}s"))
                if incident is not None:
                    await self.store.incidents.close(incident, now)
            log.warning("blast-radius guard clear: hosts still down go through their ladders")
            if incident is not None:
                await self.notifier.resolve(incident)
            self._on_clear()

    async def hold(self, host: str | None, what: str, summary: str) -> bool:
        """Whether a per-host notice or page must be held now; if so, journal it against the episode."""
        if not self.episode.active:
            return False
        async with self.store.transaction():
            await self.store.incidents.append(JournalEntry(ts=self.clock.time(), event="held", host=host, decision=what,
                                                           incident_id=self.episode.incident_id,
                                                           reason=f"held during the blast-radius episode: {summary}"))
        return True
