"""The scheduler: runs every check on its own schedule and records what it finds.

Schedules are phase-locked: a check with interval ``I`` runs at ``k*I + phase`` (epoch
seconds), where ``phase`` is derived from a hash of the check's id. First runs therefore
spread evenly over the interval, the same check always runs at the same offset, and a
restart resumes at the next slot instead of firing every overdue check at once. While a
problem is unconfirmed (soft), the check re-runs every ``retry_interval`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import logging
import math
from dataclasses import dataclass
from typing import Protocol

from monitord.run.checkstate import CheckState, Event, transition
from monitord.shared.clock import Clock
from monitord.config import CheckSpec
from monitord.edge.metrics import Metrics
from monitord.shared.results import Result
from monitord.run.runner import run_probe
from monitord.records.store import JournalEntry, Store, StoredCheck, StoreFault
from monitord.shared.probe import ProbeContext

log = logging.getLogger(__name__)

FLUSH_EVERY = 1.0
"""The scheduler's tick: staged check states (results that changed nothing worth journaling)
are written together, in one transaction, this long after the first of them."""


def phase(check_id: str, period: float) -> float:
    """A stable offset in ``[0, period)`` for ``check_id``."""
    digest = hashlib.sha256(check_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * period


def next_slot(after: float, interval: float, offset: float) -> float:
    """The first time strictly after ``after`` of the form ``k*interval + offset``."""
    return (math.floor((after - offset) / interval) + 1) * interval + offset


def initial_due(spec: CheckSpec, state: CheckState, now: float) -> float:
    """When a check first runs after start-up or reload, given its stored state."""
    if state.retrying and state.last_run:
        due = state.last_run + spec.retry_interval
        return due if due > now else now + phase(spec.id, spec.retry_interval)
    return next_slot(now, spec.interval, phase(spec.id, spec.interval))


@dataclass(slots=True)
class _Entry:
    spec: CheckSpec
    state: CheckState
    incident_id: int | None
    due: float
    token: int
    offset: float
    """The check's phase in its interval (``phase``: a sha256, so computed once, not per run)."""


_JOURNALED = {
    Event.DETECTED: "problem detected, not yet confirmed",
    Event.CONFIRMED: "problem confirmed",
    Event.CHANGED: "status changed",
    Event.SOFT_RECOVERY: "recovered before confirmation",
    Event.RECOVERED: "recovered",
}


class CheckListener(Protocol):
    """Who hears of check events (the escalation engine, :class:`monitord.escalation.engine.Engine`)."""

    async def notify(self, spec: CheckSpec, event: Event, result: Result, incident_id: int | None) -> None:
        """A check was confirmed down, changed status while down, or recovered."""

    def episode(self, host: str) -> int | None:
        """The incident ``host``'s open ladder owns: a check confirmed meanwhile joins it instead
        of opening its own, and a check recovering meanwhile does not close it."""


class Scheduler:
    """Runs checks when due, at most ``max_concurrency`` at once."""

    def __init__(self, *, clock: Clock, store: Store, metrics: Metrics, ctx: ProbeContext, max_concurrency: int):
        self.clock = clock
        self.store = store
        self.metrics = metrics
        self.ctx = ctx
        self._sem = asyncio.Semaphore(max_concurrency)
        self._entries: dict[str, _Entry] = {}
        self._with_incident: set[str] = set()
        """Checks with an incident open: the incidents_open gauge without a scan of every check."""
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._tokens = itertools.count(1)
        self._wake = asyncio.Event()
        self._dirty = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.listener: CheckListener | None = None
        """Told of check events, asked for a host's episode (the engine)."""

    # -- configuration -------------------------------------------------------------------

    async def load(self, specs: list[CheckSpec], stored: dict[str, StoredCheck] | None = None) -> None:
        """Install the checks of a (new) configuration, keeping state of checks that stay."""
        now = self.clock.time()
        stored = stored or {}
        new_ids = {spec.id for spec in specs}
        for check_id in [c for c in self._entries if c not in new_ids]:
            await self._withdraw(self._entries.pop(check_id), now)
        fresh = []
        for spec in specs:
            old = self._entries.get(spec.id)
            if old is not None and old.spec.fingerprint == spec.fingerprint:
                old.spec = spec
                continue
            if old is not None:
                state, incident_id = old.state, old.incident_id
            elif spec.id in stored:
                state, incident_id = stored[spec.id].state, stored[spec.id].incident_id
            else:
                state, incident_id = CheckState(), None
            entry = _Entry(spec, state, incident_id, 0.0, next(self._tokens), phase(spec.id, spec.interval))
            self._entries[spec.id] = entry
            self.metrics.restore(spec.host, spec.name, spec.kind.name, state)
            fresh.append(entry)
        now = self.clock.time()  # scheduled from when loading ends (seconds later for a large fleet)
        for entry in fresh:
            entry.due = initial_due(entry.spec, entry.state, now)
            self._push(entry)
        self.metrics.checks_configured.set(len(self._entries))
        self._with_incident = {check_id for check_id, entry in self._entries.items() if entry.incident_id is not None}
        self._update_open_incidents()

    async def _withdraw(self, entry: _Entry, now: float) -> None:
        """A check left the configuration: close its incident and drop its series."""
        spec = entry.spec
        if entry.incident_id is not None:
            async with self.store.transaction(durable=True):
                await self.store.incidents.close(entry.incident_id, now)
                await self.store.incidents.append(JournalEntry(
                    ts=now, event="withdrawn", host=spec.host, check=spec.name, incident_id=entry.incident_id,
                    reason="check removed from the configuration"))
        self.metrics.forget(spec.host, spec.name, spec.kind.name)

    def stalled(self, now: float, allowance: float) -> str | None:
        """Why dispatching looks stuck (the next check is overdue by more than ``allowance``), or None."""
        if self._heap and (late := now - self._heap[0][0]) > allowance:
            return f"scheduler stuck: {self._heap[0][2]} is {late:.0f}s overdue"
        return None

    @property
    def size(self) -> int:
        """How many checks are loaded."""
        return len(self._entries)

    def due_times(self) -> dict[str, float]:
        """When each check runs next (for status output and tests)."""
        return {check_id: entry.due for check_id, entry in self._entries.items()}

    def state_of(self, check_id: str) -> CheckState:
        """The current state of a check."""
        return self._entries[check_id].state

    def incident_of(self, check_id: str) -> int | None:
        """The incident a check has open, if any."""
        return self._entries[check_id].incident_id

    # -- running -------------------------------------------------------------------------

    def _push(self, entry: _Entry) -> None:
        heapq.heappush(self._heap, (entry.due, next(self._seq), entry.spec.id, entry.token))
        if self._heap[0][2] == entry.spec.id:
            self._wake.set()

    async def run(self) -> None:
        """Dispatch due checks until cancelled; write staged check states once per tick.

        Checks whose first slot passed between loading and now (start-up work: the store, the
        listener, memory settling; 3-10 s at 50,000 checks) resume at their next slot, as
        after any restart, instead of all starting at once, late."""
        self._resume(self.clock.time())
        flusher = asyncio.create_task(self._flush_ticks(), name="check states")
        try:
            while True:
                if not self._heap:
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                due, _, check_id, token = self._heap[0]
                if due > self.clock.time():
                    await self._sleep_or_wake(due)
                    continue
                heapq.heappop(self._heap)
                entry = self._entries.get(check_id)
                if entry is None or entry.token != token:
                    continue  # removed or rescheduled since it was queued
                task = asyncio.create_task(self._execute(entry, token), name=f"check {check_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            flusher.cancel()
            await self._cancel_running()
            await self.flush()

    def _resume(self, now: float) -> None:
        overdue = [entry for entry in self._entries.values() if entry.due < now]
        for entry in overdue:
            entry.due, entry.token = initial_due(entry.spec, entry.state, now), next(self._tokens)
            self._push(entry)

    async def _flush_ticks(self) -> None:
        while True:
            await self._dirty.wait()
            await self.clock.sleep_until(self.clock.time() + FLUSH_EVERY)
            self._dirty.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write the staged check states in one transaction (on a fault they stay staged)."""
        try:
            await self.store.checks.flush()
        except StoreFault:
            pass  # the store says why, once; they are written with the next tick after it recovers
        except Exception:  # noqa: BLE001 - a broken store must not stop the schedule
            log.exception("could not write check states")

    async def _sleep_or_wake(self, until: float) -> None:
        self._wake.clear()
        sleeper = asyncio.ensure_future(self.clock.sleep_until(until))
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
        self._wake.clear()

    async def _cancel_running(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _execute(self, entry: _Entry, token: int) -> None:
        spec = entry.spec
        result = await self._probe(spec, entry.due)
        current = self._entries.get(spec.id)
        if current is not entry or entry.token != token:
            return  # the check was removed, changed or re-scheduled while it ran
        try:
            await self._record(entry, result)
        except StoreFault:
            # Not recordable (the store says why, once): the check's state stands still until the
            # store is writable again, but the result is exported, so probing stays visible.
            self.metrics.observe(spec.host, spec.name, spec.kind.name, result, entry.state)
        except Exception:  # noqa: BLE001 - a broken store must not stop the check's schedule
            log.exception("%s: could not record result", spec.id)
        now = self.clock.time()
        if entry.state.retrying:
            entry.due = now + spec.retry_interval
        else:
            entry.due = next_slot(max(now, entry.due), spec.interval, entry.offset)
        self._push(entry)

    async def _probe(self, spec: CheckSpec, due: float | None = None) -> Result:
        """Run ``spec`` through the runner, within the concurrency bound, counted as running;
        a scheduled run (``due``) also observes its lateness."""
        async with self._sem if spec.kind.bounded else contextlib.nullcontext():
            start = self.clock.time()
            if due is not None:
                self.metrics.lateness.labels(spec.kind.name).observe(max(0.0, start - due))
            self.metrics.checks_running.inc()
            try:
                return await run_probe(spec.kind, self.ctx, spec.call(), spec.params, start)
            finally:
                self.metrics.checks_running.dec()

    async def run_now(self, check_id: str) -> Result:
        """Run a check at once, out of schedule, and record its result (a re-probe, a guard's or a
        verification's probe): the runner's path, so check state and metrics follow; KeyError for
        a check that is not scheduled."""
        entry = self._entries[check_id]
        spec = entry.spec
        result = await self._probe(spec)
        if self._entries.get(check_id) is entry:
            was_retrying = entry.state.retrying
            await self._record(entry, result)
            if entry.state.retrying and not was_retrying:
                entry.token = next(self._tokens)  # retry from now on, not at the old slot
                entry.due = self.clock.time() + spec.retry_interval
                self._push(entry)
        return result

    def run_soon(self, check_id: str) -> None:
        """Start :meth:`run_now` in the background."""
        if check_id not in self._entries:
            return
        task = asyncio.create_task(self.run_now(check_id), name=f"re-probe {check_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _record(self, entry: _Entry, result: Result) -> None:
        spec = entry.spec
        state, event = transition(entry.state, result, spec.max_attempts)
        incident_id = entry.incident_id
        now = result.started_at
        if event not in _JOURNALED:
            # Nothing to journal: the state waits for the tick's one transaction (a crash loses
            # at most this tick's states, and a restart then resumes one tick stale).
            if self.store.fault is not None:
                raise StoreFault(self.store.fault)
            self.store.checks.stage(spec.id, state, incident_id)
            self._dirty.set()
        else:
            async with self.store.transaction(durable=event in (Event.CONFIRMED, Event.RECOVERED)):
                episode = (self.listener.episode(spec.host)
                           if self.listener is not None and event in (Event.CONFIRMED, Event.RECOVERED) else None)
                if event is Event.CONFIRMED:
                    incident_id = episode if episode is not None else await self.store.incidents.open(
                        spec.host, spec.name, spec.kind.name, now, state.problem_since or now, result.summary)
                await self.store.incidents.append(JournalEntry(
                    ts=now, event=str(event), host=spec.host, check=spec.name, incident_id=incident_id,
                    reason=str(result.reason) or None, outcome=str(result.status),
                    detail={"summary": result.summary, "attempt": state.attempt, "max_attempts": spec.max_attempts},
                ))
                if event is Event.RECOVERED and incident_id is not None:
                    if incident_id != episode:
                        await self.store.incidents.close(incident_id, now)
                    incident_id = None
                await self.store.checks.put(spec.id, state, incident_id)
        event_incident = entry.incident_id if event is Event.RECOVERED else incident_id
        entry.state, entry.incident_id = state, incident_id
        if incident_id is None:
            self._with_incident.discard(spec.id)
        else:
            self._with_incident.add(spec.id)
        self.metrics.observe(spec.host, spec.name, spec.kind.name, result, state)
        if self.listener is not None and event in (Event.CONFIRMED, Event.CHANGED, Event.RECOVERED):
            await self.listener.notify(spec, event, result, event_incident)
        if event in _JOURNALED:
            level = logging.WARNING if event in (Event.CONFIRMED, Event.CHANGED) else logging.INFO
            log.log(level, "%s: %s (%s%s): %s", spec.id, _JOURNALED[event], result.status,
                    f"/{result.reason}" if result.reason else "", result.summary)
            self._update_open_incidents()

    def _update_open_incidents(self) -> None:
        self.metrics.incidents_open.set(len(self._with_incident))
