"""The escalation engine: wires intake, guards, actions and recovery to the pure ladder.

:mod:`~monitord.escalation.intake` turns check events into ladder events;
:mod:`~monitord.escalation.guards` finds out what the world looks like before each decision;
:func:`~monitord.escalation.ladder.step` decides; the engine journals every decision durably
BEFORE acting; :mod:`~monitord.escalation.actions` carries the actions out and their outcomes
are fed back; :mod:`~monitord.escalation.recovery` reconciles an action that was in flight when
the daemon died, by reading state, never re-issuing it.

One host at a time: a per-host lock serialises everything done to a host, so there is never
more than one action per target. A decision that waited (queued behind the host's lock,
deferred to the end of a grace period) re-reads the check's state when it runs, and a
destructive action decided on a check event re-probes the check first; a check that recovered
meanwhile cancels it, journaled.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import logging
from typing import Any, Coroutine

from monitord.config import CheckSpec, Config
from monitord.edge.metrics import Metrics
from monitord.escalation import ladder as esc
from monitord.escalation import quarantine, recovery
from monitord.escalation.actions import Actions, Pages
from monitord.escalation.blastradius import BlastGuard
from monitord.escalation.fleet import CheckRunner, Fleet, is_host_down_check
from monitord.escalation.guards import GuardSet, StoreHealth
from monitord.escalation.intake import Intake, actionable
from monitord.paging.business_calendar import Calendars
from monitord.paging.notify import Notifier
from monitord.records.store import JournalEntry, Store, StoreFault
from monitord.run.checkstate import Event as CheckEvent
from monitord.shared.clock import Clock
from monitord.shared.probe import ProbeContext
from monitord.shared.results import Result
from remediation.drivers import Drivers

log = logging.getLogger(__name__)

REEVALUATE_EVERY = 30.0


def state_to_dict(state: esc.HostState) -> dict:
    """JSON form of a host's escalation state."""
    return {f.name: (sorted(v) if isinstance(v, frozenset) else v)
            for f in dataclasses.fields(state) for v in [getattr(state, f.name)]}


def state_from_dict(data: dict) -> esc.HostState:
    """Inverse of :func:`state_to_dict`; unknown keys (from a newer version) are ignored."""
    fields = {f.name for f in dataclasses.fields(esc.HostState)}
    values = {k: v for k, v in data.items() if k in fields}
    for name, kind in (("phase", esc.Phase), ("ladder", esc.Ladder), ("step", esc.Step), ("pending", esc.Step),
                       ("resume", esc.Phase)):
        if values.get(name) is not None:
            values[name] = kind(values[name])
    for name in ("power_actions", "restarts", "drivers_failed", "tried", "causes"):
        if name in values:
            values[name] = tuple(values[name])
    return esc.HostState(**values)


class Engine:
    """Runs the escalation ladders of every host."""

    def __init__(self, *, config: Config, store: Store, metrics: Metrics, clock: Clock, ctx: ProbeContext,
                 scheduler: CheckRunner, notifier: Notifier, dry_run: bool = False, drivers: Drivers | None = None):
        self.store, self.metrics, self.clock, self.ctx = store, metrics, clock, ctx
        self.notifier = notifier
        self.scheduler = scheduler
        self.dry_run = dry_run
        self.drivers = drivers or Drivers()
        self._locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._answers: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        # held only while a power command is under way: a quarantine waits for that, not for a boot wait
        self._power_locks: dict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self._tasks: set[asyncio.Task] = set()
        self._states: dict[str, esc.HostState] = {}  # read by restore()
        self.health = StoreHealth(store)
        self._active_windows: set[str] = set()
        self.last_pass = clock.time()
        self.blast = BlastGuard(config=lambda: (self.config.escalation.blast_radius, len(self.config.hosts)),
                                store=store, notifier=notifier, metrics=metrics, clock=clock,
                                failing=lambda: self.fleet.failing_hosts(), probe=lambda host: self.fleet.answers(host),
                                on_clear=self._reevaluate)
        self.apply_config(config)

    async def restore(self) -> None:
        """Take up what the store kept (before the scheduler runs): each host's escalation state,
        an open blast-radius episode."""
        self._states = await self.store.checks.escalations(state_from_dict)
        await self.blast.restore()
        for host in self.config.hosts:
            self.metrics.escalation_level.labels(host).set(self.state(host).level)

    def apply_config(self, config: Config) -> None:
        """Use a (re)loaded configuration."""
        self.config = config
        self.calendars = Calendars(config)
        self.fleet = Fleet(config, self.scheduler)
        self.guards = GuardSet(config=config, store=self.store, fleet=self.fleet, calendars=self.calendars,
                               blast=self.blast, health=self.health, dry_run=self.dry_run)
        self.actions = Actions(config=config, store=self.store, clock=self.clock, fleet=self.fleet,
                               drivers=self.drivers, power_locks=self._power_locks, answers=self._answers)
        self.pages = Pages(config=config, store=self.store, notifier=self.notifier, calendars=self.calendars,
                           ctx=self.ctx)
        self.recovery = recovery.Recovery(config=config, actions=self.actions)
        self.intake = Intake(config=config, store=self.store, clock=self.clock, notifier=self.notifier,
                             blast=self.blast, calendars=self.calendars, fleet=self.fleet, state=self.state,
                             start=self._start, submit=self.submit, spawn=self._spawn)
        for host in config.hosts:
            self.metrics.escalation_level.labels(host).set(self.state(host).level)

    def state(self, host: str) -> esc.HostState:
        """A host's escalation state."""
        return self._states.get(host, esc.HostState())

    # -- events from the scheduler (monitord.run.scheduler.CheckListener) ---------------------

    def episode(self, host: str) -> int | None:
        """The incident of ``host``'s open ladder (see :meth:`Intake.episode`), or of a service
        confirmation deferred while a host-down check settles (:meth:`Intake.waiting`)."""
        episode = self.intake.episode(host)
        return episode if episode is not None else self.intake.waiting(host)

    async def notify(self, spec: CheckSpec, event: CheckEvent, result: Result, incident_id: int | None) -> None:
        """Called by the scheduler when a check is confirmed down, changes status while down
        (e.g. partial loss became total loss), or recovers."""
        try:
            await self.intake.on_check_event(spec, event, result, incident_id)
        except StoreFault:
            self.health.hold(spec.host)  # caught up with by store_recovered()

    def _start(self, host: str, event: esc.Confirmed, when: float, notice: bool = True) -> None:
        self._spawn(self._intake(host, event, when, notice), f"escalation {host}")

    async def _intake(self, host: str, event: esc.Confirmed, when: float, notice: bool = True) -> None:
        """A confirmed failure: announced (through the blast-radius guard), then the ladder runs,
        all under the host's lock: a check of the host confirmed while a host-down confirmation
        is still being looked at (its fresh probes) waits for it, and then joins its ladder."""
        if host not in self.config.hosts:
            return
        async with self._locks[host]:
            try:
                if not await self.intake.announce(host, event, when, notice):
                    return
            except StoreFault:
                self.health.hold(host)
                return
            await self._advance_all(host, event)

    def submit(self, host: str, event: esc.Event) -> None:
        """Handle ``event`` for ``host`` in the background (serialised per host)."""
        self._spawn(self._drive(host, event), f"escalation {host}")

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Resume in-flight actions, then re-evaluate blocked hosts periodically until cancelled."""
        for host, state in list(self._states.items()):
            if host in self.config.hosts and recovery.in_flight(state):
                self._start_resume(host)
        try:
            while True:
                self.last_pass = self.clock.time()
                try:
                    before = self._active_windows
                    self._active_windows = await self.guards.log_maintenance(before, self.clock.time())
                    if before - self._active_windows:
                        await self.intake.after_maintenance()
                    if self.blast.active:
                        await self.blast.evaluate()  # quietly: journaled and paged once per episode
                except StoreFault:
                    pass  # the store reports its fault once; looked at again next round
                self._reevaluate()
                await self.clock.sleep_until(self.clock.time() + REEVALUATE_EVERY)
        finally:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stalled(self, now: float, allowance: float) -> str | None:
        """Why the re-evaluation loop looks stuck (no pass for longer than usual + ``allowance``), or None."""
        if (quiet := now - self.last_pass) > REEVALUATE_EVERY + allowance:
            return f"escalation stuck: no re-evaluation for {quiet:.0f}s"
        return None

    async def idle(self) -> None:
        """Wait until no escalation work is in progress (for tests and the CLI)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def _reevaluate(self) -> None:
        """Hosts still failing but idle (blocked, deferred) get another look: guards may have lifted."""
        for host, confirmed, when in self.intake.still_down(bool(self.blast.active)):
            self._start(host, confirmed, when, notice=True)

    # -- the loop: decide, journal, act, feed back -------------------------------------------

    async def _drive(self, host: str, event: esc.Event | None) -> None:
        if host not in self.config.hosts:
            return
        async with self._locks[host]:
            await self._advance_all(host, event)

    async def _advance_all(self, host: str, event: esc.Event | None) -> None:
        """Feed ``event`` (unless it went stale while it waited) and the outcomes it leads to;
        while the store cannot be written (journal-first cannot be honoured) nothing is decided
        or done: the host is held."""
        try:
            if event is not None and await self.intake.cancelled(host, event, await self.intake.stale(host, event)):
                return
            while event is not None:
                if self.health.verdict() is not None:
                    self.health.hold(host)
                    return
                event = await self._advance(host, event)
        except StoreFault:
            self.health.hold(host)

    async def store_recovered(self) -> None:
        """The store can be written again: catch up with what happened meanwhile, from the
        current check states, never from stale events (:func:`recovery.catch_up`); hosts still
        failing are taken up by :meth:`_reevaluate`."""
        for host in self.health.release():
            if host not in self.config.hosts:
                continue
            state = self.state(host)
            check = self.fleet.state(host, state.check) if state.check is not None else None
            need = recovery.catch_up(state, check is not None and check.level == 0)
            if need == "resume":
                self._start_resume(host)
            elif need is not None:
                self.submit(host, need)
        self._reevaluate()

    def _start_resume(self, host: str) -> None:
        async def resume() -> None:
            try:
                await self._resume(host)
            except StoreFault:
                self.health.hold(host)

        self._spawn(resume(), f"resume {host}")

    async def _resume(self, host: str) -> None:
        """Reconcile an action that was in flight when the daemon stopped: read, never redo."""
        async with self._locks[host]:
            state, now = self.state(host), self.clock.time()
            done, note = await self.recovery.reconcile(host, state, self.policy(host), now)
            async with self.store.transaction(durable=True):
                await self.store.incidents.append(JournalEntry(ts=now, event="reconciled", host=host, incident_id=state.incident_id,
                                                               decision=str(state.step), reason=note,
                                                               outcome="ok" if done.ok else "failed", detail=_found(done)))
            log.warning("%s: %s", host, note)
            await self._advance_all(host, done)

    async def _advance(self, host: str, event: esc.Event) -> esc.Event | None:
        policy = self.policy(host)
        before = self.state(host)
        now = self.clock.time()
        guards = await self.guards.cheap(host, now)
        state, decisions = esc.step(before, event, policy, guards, now)
        if any(isinstance(d, esc.Act) and d.step in esc.DESTRUCTIVE for d in decisions):
            # the ladder's first destructive action: the check may have recovered since it was confirmed
            first = isinstance(event, esc.Confirmed) or (isinstance(event, esc.Done) and event.step is esc.Step.BMC_READ)
            guards, answers = await asyncio.gather(self.guards.full(host, guards),
                                                   self._answers_now(host, state.check or "") if first else _no())
            guards = dataclasses.replace(guards, answers=answers)
            now = self.clock.time()  # the decision is taken (and journaled) now, after the guards' probes
            state, decisions = esc.step(before, event, policy, guards, now)
        ids = await self._commit(host, state, decisions, event, now)
        follow: esc.Event | None = None
        for decision, entry_id in zip(decisions, ids):
            if isinstance(decision, esc.Act):
                self.metrics.last_action.labels(host).set(self.clock.time())
                done = await self.actions.execute(host, decision, self.state(host))
                await self._journal_outcome(host, decision, done, entry_id)
                follow = done
            elif isinstance(decision, esc.Resolved):
                if before.incident_id is not None:
                    await self.intake.close_incident(host, before.incident_id, self.clock.time())
                    if not await self.intake.hold(host, "auto_fixed", "fixed automatically", before.incident_id):
                        await self.pages.tell_fixed(host, before)
                self._reprobe(host)
            elif isinstance(decision, esc.Retry):
                self._later(host, decision.at, decision.event or event)
        return follow

    async def _answers_now(self, host: str, check: str) -> bool:
        """Re-probe ``check`` before the first destructive action decided on it (recorded as usual)."""
        spec = self.fleet.spec(host, check)
        return spec is not None and (await self.fleet.probe(spec)).ok

    async def _commit(self, host: str, state: esc.HostState, decisions: list, event: esc.Event, now: float) -> list[int]:
        """Persist the new state and journal the decisions in one durable transaction."""
        incident = state.incident_id or getattr(event, "incident_id", None) or self.state(host).incident_id
        ids: list[int] = []
        async with self.store.transaction(durable=True):
            await self.store.checks.put_escalation(host, state_to_dict(state))
            for d in decisions:
                ids.append(await self.store.incidents.append(_journal_entry(host, d, state, incident, now)))
        self._states[host] = state
        self.metrics.escalation_level.labels(host).set(state.level)
        for d in decisions:
            if isinstance(d, esc.Blocked):
                self.metrics.guard_blocks.labels(d.guard).inc()
                log.warning("%s: %s", host, d.why)
            elif isinstance(d, esc.Page):
                self.metrics.escalation_pages.labels(d.kind).inc()
                log.warning("%s: PAGE %s (level %d): %s", host, d.kind, d.level, d.summary)
                if not await self.intake.hold(host, d.kind, d.summary, incident):
                    await self.pages.page(host, d, incident)
            elif isinstance(d, esc.Act):
                log.warning("%s: level %d: %s (%s)", host, d.level, d.step, d.why)
                if d.step is esc.Step.REQUEST_APPROVAL:
                    await self.pages.ask_emergency_contact(host, d, incident)
            elif isinstance(d, esc.Resolved):
                log.info("%s: resolved: %s", host, d.why)
            elif isinstance(d, esc.StartSla):
                log.warning("%s: SLA timer %s started", host, d.name)
                await self.notifier.start_sla(incident, host, d.name)
        return ids

    async def _journal_outcome(self, host: str, act: esc.Act, done: esc.Done, ref: int) -> None:
        outcome = "ok" if done.ok else "failed"
        self.metrics.actions.labels(str(act.step), outcome).inc()
        async with self.store.transaction(durable=True):
            await self.store.incidents.append(JournalEntry(
                ts=self.clock.time(), event="outcome", host=host, incident_id=self.state(host).incident_id,
                decision=str(act.step), reason=done.reason or None, outcome=outcome, ref=ref,
                detail=_found(done)))

    def _later(self, host: str, at: float, event: esc.Event) -> None:
        async def again() -> None:
            await self.clock.sleep_until(at)
            await self._drive(host, event)

        self._spawn(again(), f"retry {host}")

    def _reprobe(self, host: str) -> None:
        """Run the host's checks now, so their states catch up with what the ladder verified."""
        for spec in self.fleet.of_host(host):
            self.scheduler.run_soon(spec.id)

    # -- policy and explanations --------------------------------------------------------------

    def policy(self, host: str) -> esc.Policy:
        """The host's remediation policy, from the config."""
        h, r = self.config.hosts[host], self.config.remediation(host)
        return esc.Policy(
            power_drivers=h.power_drivers(),
            has_bmc=h.bmc is not None, has_ssh=h.ssh is not None,
            boot_timeout=r.boot_timeout, max_resets=r.max_resets, reset_window=r.reset_window,
            grace=r.grace, max_restarts=r.max_restarts, restart_window=r.restart_window,
            contact_first=frozenset(esc.Step(a) for a in r.contact_first), on_no_answer=r.on_no_answer,
            dry_run=r.dry_run,
            restartable=frozenset(name for name, check in h.checks.items() if check.restart is not None),
            name=host, verify_interval=max(r.verify_interval, 5.0),
            engineer_on_site=self.config.paging.sla.engineer_on_site,
            steps=tuple(rung.key() for rung in r.ladder),
            processes=frozenset(name for name, check in h.checks.items()
                                if check.restart is not None and check.restart.start_command is not None),
        )

    async def explain(self, host: str) -> dict:
        """Why the engine is or is not acting on ``host`` now: where its ladder stands, what the
        ladder would decide next for a check confirmed down (the ladder's own :func:`esc.step` on
        a copy), and every guard's verdict on the next destructive step (the same guard units the
        engine asks, :meth:`GuardSet.verdicts`). Nothing is probed, stored or journaled: parents
        and the blast radius are read as the scheduler and the blast guard last saw them."""
        now = self.clock.time()
        state, policy = self.state(host), self.policy(host)
        host_ladder = state.ladder is not esc.Ladder.SERVICE
        what = next((s for s in (state.pending, state.step) if s in esc.DESTRUCTIVE),
                    esc.Step.POWER_RESET if host_ladder else esc.Step.SERVICE_RESTART)
        verdicts = await self.guards.verdicts(host, what, state, policy, now)
        return {
            "host": host, "at": now,
            "ladder": {"phase": str(state.phase), "ladder": state.ladder and str(state.ladder), "level": state.level,
                       "step": state.step and str(state.step), "pending": state.pending and str(state.pending),
                       "incident": state.incident_id, "blocked": state.blocked, "tried": list(state.tried),
                       "grace_until": state.grace_until or None,
                       "recent_power_actions": len(esc.recent_power_actions(state, policy, now)),
                       "recent_restarts": len(esc.recent_restarts(state, policy, now))},
            "next": self._next(host, state, policy, await self.guards.cheap(host, now), now),
            "guards_for": str(what),
            "guards": [{"guard": name, "verdict": "block" if why else "pass", "reason": why or "passes"}
                       for name, why in verdicts],
        }

    def _next(self, host: str, state: esc.HostState, policy: esc.Policy, guards: esc.Guards, now: float) -> dict:
        """What the ladder does next and when (see :meth:`explain`)."""
        if state.phase is not esc.Phase.IDLE:
            waiting = {esc.Phase.ACTING: f"waiting for {state.step} to finish",
                       esc.Phase.AWAITING_APPROVAL: f"waiting for the emergency contact's answer about {state.pending}",
                       esc.Phase.DISPATCHED: "level 3: an engineer is dispatched; no more automatic action",
                       esc.Phase.HELD: "held: people decide; no more automatic action"}[state.phase]
            return {"what": waiting, "at": None, "decisions": []}
        checks = [(spec, check) for spec in self.fleet.of_host(host)
                  if (check := self.fleet.state(host, spec.name)) is not None]
        down = [(spec, check) for spec, check in checks
                if check.level == 2 and check.last_result is not None and actionable(check.last_result)]
        if not down:
            failing = [spec for spec, check in checks if check.level == 1]
            if failing:
                due = self.scheduler.due_times().get(failing[0].id)
                return {"what": f"{failing[0].name} fails but is not confirmed yet: it is retried", "at": due,
                        "decisions": []}
            return {"what": "nothing: no check of the host is confirmed down", "at": None, "decisions": []}
        spec, check = min(down, key=lambda sc: not is_host_down_check(sc[0]))
        if not is_host_down_check(spec) and (pending := self.intake.settling(host)) is not None:
            return {"what": f"{spec.name} is confirmed down and waits for {pending} to settle (the host may be going down)",
                    "at": self.scheduler.due_times().get(self.fleet.spec(host, pending).id), "decisions": []}
        event = esc.Confirmed(spec.name, is_host_down_check(spec), self.episode(host), check.last_result.summary)
        _, decisions = esc.step(state, event, policy, guards, now)
        described = [_describe(d) for d in decisions]
        retry = next((d.at for d in decisions if isinstance(d, esc.Retry)), None)
        return {"what": f"{spec.name} is confirmed down: " + ("; ".join(described) or "nothing new (the block stands)"),
                "at": retry if retry is not None else self.scheduler.due_times().get(spec.id), "decisions": described}

    # -- what operators ask of the running daemon (the API) ------------------------------------

    async def quarantine(self, host: str, reason: str, by: str | None) -> tuple[bool, str]:
        """Quarantine ``host``: recorded at once (from then on nothing powers it on, and its ladder
        is held), then powered off as soon as no power command is under way: a compromised server
        is stopped at once, not after the ladder's boot wait or approval; return (powered off, summary)."""
        decided = await quarantine.record(self.store, self.config, host, reason, by)
        async with self._power_locks[host]:
            return await quarantine.power_off(self.store, self.config, host, decided, self.drivers)

    async def release(self, host: str, by: str | None) -> bool:
        """Lift the quarantine of ``host`` under its lock (it is not powered on); False if it was not quarantined."""
        async with self._locks[host]:
            return await quarantine.release(self.store, host, by)

    def answered(self, host: str) -> None:
        """An approval answer for ``host`` was recorded through the API: a ladder waiting for it reads it now."""
        self._answers[host].set()


async def _no() -> bool:
    return False


def _describe(d: esc.Decision) -> str:
    """One decision of the ladder in words."""
    if isinstance(d, esc.Act):
        return f"{d.step} at level {d.level}: {d.why}"
    if isinstance(d, esc.Blocked):
        return f"blocked by {d.guard}: {d.why}"
    if isinstance(d, esc.Page):
        return f"page {d.kind} at level {d.level}: {d.summary}"
    if isinstance(d, esc.StartSla):
        return f"start the {d.name} SLA timer, due {_iso(d.due)}"
    if isinstance(d, esc.Retry):
        return f"wait until {_iso(d.at)}: {d.why}"
    return getattr(d, "why", None) or getattr(d, "text", "")


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _found(done: esc.Done) -> dict:
    """What an action found, as journaled."""
    return done.detail.journal() if done.detail else {}


def _journal_entry(host: str, d: esc.Decision, state: esc.HostState, incident: int | None, now: float) -> JournalEntry:
    """How each kind of decision reads in the journal."""
    base = dict(ts=now, host=host, check=state.check, incident_id=incident)
    if isinstance(d, esc.Act):
        return JournalEntry(event="decided", decision=str(d.step), reason=d.why,
                            detail={"level": d.level, **(d.args.journal() if d.args else {})}, **base)
    if isinstance(d, esc.Blocked):
        return JournalEntry(event="blocked", decision=d.guard, reason=d.why, **base)
    if isinstance(d, esc.Page):
        return JournalEntry(event="page", decision=d.kind, reason=d.summary,
                            detail={"level": d.level, **_jsonable(d.detail)}, **base)
    if isinstance(d, esc.StartSla):
        return JournalEntry(event="sla_started", decision=d.name, detail={"due": d.due}, **base)
    if isinstance(d, esc.Resolved):
        return JournalEntry(event="resolved", reason=d.why, **base)
    if isinstance(d, esc.Retry):
        return JournalEntry(event="deferred", reason=d.why, detail={"until": d.at}, **base)
    return JournalEntry(event="note", reason=d.text, **base)
