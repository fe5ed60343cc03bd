"""The escalation engine: feeds check events to the pure state machine, checks the guards,
journals every decision durably BEFORE acting, carries the actions out through the
remediation drivers, and feeds their outcomes back.

One host at a time: a per-host lock serialises everything done to a host, so there is
never more than one action per target. On start-up an action that was in flight when the
daemon died is reconciled by reading state (power status, a re-probe), never re-issued.

A host's episode is the incident its open ladder owns: a second failing check of the host
joins it (the scheduler asks :meth:`Engine.episode`), a check that recovers only feeds the
ladder, and the incident closes (pages resolved, the customer told) when the ladder's own
verification passes. A decision that waited (queued behind the host's lock, deferred to the
end of a grace period) re-reads the check's state when it runs, and a destructive action
decided on a check event re-probes the check first; a check that recovered meanwhile
cancels it, journaled.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
import logging
from typing import Any

from monitord.escalation import ladder as esc
from monitord.shared import lastbackup
from monitord.escalation.blastradius import BlastGuard
from monitord.paging.business_calendar import Calendars
from monitord.run.checkstate import Event as CheckEvent
from monitord.shared.clock import Clock
from monitord.config import CheckSpec, Config
from monitord.edge.metrics import Metrics
from monitord.paging.notify import Notifier
from monitord.shared.results import Reason, Result, Status
from monitord.run.runner import run_probe
from monitord.records.state import JournalEntry, Store, StoreFault
from monitord.shared.probe import ProbeContext
from monitord.escalation import power, quarantine
from monitord.shared.power import ActionError, PowerAction
from remediation.drivers import Drivers

log = logging.getLogger(__name__)

REEVALUATE_EVERY = 30.0
TICKETS = ("hardware_ticket", "backup_ticket")
"""Result values that make a confirmed problem business-hours work (a page of that kind), not a ladder."""
APPROVAL_POLL = 2.0


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
                 scheduler: Any, notifier: Notifier, dry_run: bool = False, drivers: Drivers | None = None):
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
        self._states = store.escalation_states(state_from_dict)
        self._held: set[str] = set()  # hosts whose events were dropped while the store could not be written
        self._active_windows: set[str] = set()
        self.last_pass = clock.time()
        self.apply_config(config)
        self.blast = BlastGuard(config=lambda: (self.config.escalation.blast_radius, len(self.config.hosts)),
                                store=store, notifier=notifier, metrics=metrics, clock=clock,
                                failing=self._failing_hosts, probe=self._host_answers, on_clear=self._reevaluate)

    def apply_config(self, config: Config) -> None:
        """Use a (re)loaded configuration."""
        self.config = config
        self.calendars = Calendars(config)
        self._specs = {(s.host, s.name): s for s in config.checks()}
        for host in config.hosts:
            self.metrics.escalation_level.labels(host).set(self.state(host).level)

    def state(self, host: str) -> esc.HostState:
        """A host's escalation state."""
        return self._states.get(host, esc.HostState())

    # -- events from the scheduler ---------------------------------------------------------

    def is_host_down_check(self, spec: CheckSpec) -> bool:
        """Whether a confirmed failure of ``spec`` means its host is down."""
        return spec.kind.host_down or spec.params.host_critical

    def episode(self, host: str) -> int | None:
        """The incident of ``host``'s open ladder: other checks of the host join it, and only
        the ladder's verification closes it."""
        state = self.state(host)
        return state.incident_id if state.ladder is not None and state.phase is not esc.Phase.IDLE else None

    def notify(self, spec: CheckSpec, event: CheckEvent, result: Result, incident_id: int | None) -> None:
        """Called by the scheduler when a check is confirmed down, changes status while down
        (e.g. partial loss became total loss), or recovers."""
        try:
            self._on_check_event(spec, event, result, incident_id)
        except StoreFault:
            self._held.add(spec.host)  # caught up with by store_recovered()

    def _on_check_event(self, spec: CheckSpec, event: CheckEvent, result: Result, incident_id: int | None) -> None:
        host_down = self.is_host_down_check(spec)
        notice = _notice_kind(spec, result)
        joined = incident_id is not None and incident_id == self.episode(spec.host)
        if event in (CheckEvent.CONFIRMED, CheckEvent.CHANGED):
            ticket = next((k for k in TICKETS if result.values.get(k)), None)
            if ticket is not None:
                self._ticket(ticket, spec, result, incident_id)
                return  # business-hours work, announced; never a reset
            if notice == "threshold":
                # contact the customer first; operations hear of it too (a warning, routed by policy)
                self.notifier.notice(spec.host, notice, f"{spec.name}: {result.summary}", incident_id,
                                     result.started_at)
                self.notifier.page(spec.host, "threshold", f"{spec.host}/{spec.name}: {result.summary}", incident_id)
            elif not actionable(result):
                # e.g. some packet loss, a certificate about to expire: people decide, no ladder
                self._warning(spec, result, incident_id)
            else:
                confirmed = esc.Confirmed(spec.name, host_down, incident_id, result.summary)
                self._spawn(self._intake(spec.host, confirmed, result.started_at, notice=not joined),
                            f"escalation {spec.host}")
        elif event is CheckEvent.RECOVERED:
            if incident_id is not None and not joined:
                self._close_incident(spec.host, incident_id, result.started_at, notice != "threshold")
            self.submit(spec.host, esc.Recovered(spec.name, host_down))
            if host_down and self.blast.active:
                self._spawn(self.blast.evaluate(), "blast radius")  # it may clear now

    def _warning(self, spec: CheckSpec, result: Result, incident_id: int | None) -> None:
        """A warning pages people, unless the host's ladder (or the grace after its last action)
        is in progress: then it is part of that incident, journaled there."""
        summary = f"{spec.host}/{spec.name}: {result.summary}"
        state = self.state(spec.host)
        episode = self.episode(spec.host)
        if episode is not None or self.clock.time() < state.grace_until:
            with self.store.transaction():
                self.store.append(JournalEntry(
                    ts=self.clock.time(), event="note", host=spec.host, check=spec.name,
                    incident_id=episode or incident_id, reason=f"warning folded into the ladder in progress: {summary}"))
        elif not self.blast.hold(spec.host, "check_warning", summary):
            self.notifier.page(spec.host, "check_warning", summary, incident_id)

    async def _intake(self, host: str, event: esc.Confirmed, when: float, notice: bool = True) -> None:
        """A confirmed failure: a host down is first seen through the blast-radius guard (is the
        monitor's side broken? does the host answer its fresh probe?); then the customer is told
        (unless the guard holds notices, or this incident was announced already) and the ladder runs."""
        try:
            await self._announce(host, event, when, notice)
        except StoreFault:
            self._held.add(host)
            return
        await self._drive(host, event)

    async def _announce(self, host: str, event: esc.Confirmed, when: float, notice: bool) -> None:
        if event.host_down:
            await self.blast.evaluate()
            if self.blast.answered.get(host, False):
                self._cancelled(host, event, f"{host} answers now: the confirmation of {event.check} is stale")
                return
        if notice and event.incident_id is not None and not self._noticed(event.incident_id):
            summary = f"{event.check}: {event.summary}"
            if not self.blast.hold(host, "failure", summary):
                self.notifier.notice(host, "failure", summary, event.incident_id, when)

    def _noticed(self, incident_id: int, what: str = "failure") -> bool:
        """Whether the customer was sent the ``what`` notice of ``incident_id``."""
        return any(e.event == "notice" and e.decision == what for e in self.store.journal(incident_id=incident_id))

    def _close_incident(self, host: str, incident_id: int, when: float, recovery_notice: bool = True) -> None:
        """The incident is over: close it, resolve its open pages, and tell the customer who
        was told of the failure (once; the ladder's verification may have done all this already)."""
        with self.store.transaction(durable=True):
            self.store.close_incident(incident_id, when)
        self.notifier.resolve(incident_id)
        if recovery_notice and self._noticed(incident_id) and not self._noticed(incident_id, "recovery"):
            self.notifier.notice(host, "recovery", host, incident_id, when)

    def _ticket(self, kind: str, spec: CheckSpec, result: Result, incident_id: int | None) -> None:
        """A failed drive or part, a backup failed twice in a row: schedule the work into the next
        business window and announce it."""
        when = self.calendars.for_host(spec.host).next_business_moment(self.clock.time())
        self.notifier.page(spec.host, kind, f"{spec.host}: {result.summary}", incident_id,
                           {"scheduled": when})
        self.notifier.notice(spec.host, "work", result.summary, incident_id, when)

    def submit(self, host: str, event: esc.Event) -> None:
        """Handle ``event`` for ``host`` in the background (serialised per host)."""
        self._spawn(self._drive(host, event), f"escalation {host}")

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        """Resume in-flight actions, then re-evaluate blocked hosts periodically until cancelled."""
        for host, state in list(self._states.items()):
            if host in self.config.hosts and state.phase in (esc.Phase.ACTING, esc.Phase.AWAITING_APPROVAL):
                self._start_resume(host)
        try:
            while True:
                self.last_pass = self.clock.time()
                try:
                    self._log_maintenance_changes()
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
        """Hosts still failing but idle (blocked, deferred) get another look: guards may have lifted.
        Hosts blocked by the blast-radius guard wait quietly until it clears."""
        for (host, name), spec in self._specs.items():
            state = self.state(host)
            if state.phase is not esc.Phase.IDLE or state.ladder is not None:
                continue
            if state.blocked == "blast_radius" and self.blast.active:
                continue
            try:
                check = self.scheduler.state_of(spec.id)
            except KeyError:
                continue
            if (check.level == 2 and check.last_result is not None and actionable(check.last_result)
                    and _notice_kind(spec, check.last_result) != "threshold"
                    and (self.is_host_down_check(spec) or spec.params.restart is not None)):
                confirmed = esc.Confirmed(name, self.is_host_down_check(spec), self.scheduler.incident_of(spec.id),
                                          check.last_result.summary)
                self._spawn(self._intake(host, confirmed, check.last_result.started_at), f"escalation {host}")

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
            if event is not None and self._cancelled(host, event, self._stale(host, event)):
                return
            while event is not None:
                if self.store.fault is not None:
                    self._held.add(host)
                    return
                event = await self._advance(host, event)
        except StoreFault:
            self._held.add(host)

    def store_recovered(self) -> None:
        """The store can be written again: catch up with what happened meanwhile, from the
        current check states, never from stale events. An action whose outcome could not be
        journaled is reconciled as after a restart (read, never redo); a ladder whose check
        recovered meanwhile is verified; hosts still failing are taken up by :meth:`_reevaluate`."""
        held, self._held = sorted(self._held), set()
        for host in held:
            state = self.state(host)
            if host not in self.config.hosts:
                continue
            if state.phase in (esc.Phase.ACTING, esc.Phase.AWAITING_APPROVAL):
                self._start_resume(host)
            elif state.ladder is not None and state.check is not None and self._check_ok(host, state.check):
                self.submit(host, esc.Recovered(state.check, state.ladder is esc.Ladder.HOST))
        self._reevaluate()

    def _start_resume(self, host: str) -> None:
        async def resume() -> None:
            try:
                await self._resume(host)
            except StoreFault:
                self._held.add(host)

        self._spawn(resume(), f"resume {host}")

    def _check_ok(self, host: str, check: str) -> bool:
        check_state = self._check_state(host, check)
        return check_state is not None and check_state.level == 0

    def _stale(self, host: str, event: esc.Event) -> str | None:
        """Why a check event no longer holds now that it is handled (it waited for the host's
        lock, or for the end of a grace period), or None."""
        if isinstance(event, esc.Done) or (isinstance(event, esc.Recovered) and self.state(host).ladder is None):
            return None  # an action's outcome is fresh; a recovery with no ladder to feed changes nothing
        check = self._check_state(host, event.check)
        if check is None:
            return None
        if isinstance(event, esc.Confirmed) and not (check.level == 2 and check.last_result is not None
                                                     and actionable(check.last_result)):
            return f"{event.check} is no longer confirmed down ({check.status})"
        if isinstance(event, esc.Confirmed) and event.incident_id is not None and self._over(event.incident_id):
            return f"incident {event.incident_id} of {event.check} is over already"
        if isinstance(event, esc.Recovered) and check.status is not Status.OK:
            return f"{event.check} failed again ({check.status})"
        return None

    def _over(self, incident_id: int) -> bool:
        """Whether incident ``incident_id`` was closed (e.g. by a ladder's verification)."""
        if any(i.id == incident_id for i in self.store.incidents(open_only=True)):
            return False
        return any(i.id == incident_id and i.closed_at is not None for i in self.store.incidents())

    def _check_state(self, host: str, check: str) -> Any:
        spec = self._specs.get((host, check))
        try:
            return self.scheduler.state_of(spec.id) if spec is not None else None
        except KeyError:
            return None

    def _cancelled(self, host: str, event: esc.Event, why: str | None) -> bool:
        """Journal that ``event``'s decision is cancelled because ``why`` (None: it is not)."""
        if why is None:
            return False
        with self.store.transaction(durable=True):
            self.store.append(JournalEntry(ts=self.clock.time(), event="cancelled", host=host,
                                           check=getattr(event, "check", None), incident_id=self.state(host).incident_id,
                                           decision=type(event).__name__.lower(), reason=why))
        log.info("%s: cancelled: %s", host, why)
        return True

    async def _advance(self, host: str, event: esc.Event) -> esc.Event | None:
        policy = self.policy(host)
        before = self.state(host)
        now = self.clock.time()
        guards = self._cheap_guards(host, now)
        state, decisions = esc.step(before, event, policy, guards, now)
        if any(isinstance(d, esc.Act) and d.step in esc.DESTRUCTIVE for d in decisions):
            # the ladder's first destructive action: the check may have recovered since it was confirmed
            first = isinstance(event, esc.Confirmed) or (isinstance(event, esc.Done) and event.step is esc.Step.BMC_READ)
            guards, answers = await asyncio.gather(self._full_guards(host, guards),
                                                   self._answers_now(host, state.check or "") if first else _no())
            guards = dataclasses.replace(guards, answers=answers)
            now = self.clock.time()  # the decision is taken (and journaled) now, after the guards' probes
            state, decisions = esc.step(before, event, policy, guards, now)
        ids = self._commit(host, state, decisions, event, now)
        follow: esc.Event | None = None
        for decision, entry_id in zip(decisions, ids):
            if isinstance(decision, esc.Act):
                done = await self._execute(host, decision)
                self._journal_outcome(host, decision, done, entry_id)
                follow = done
            elif isinstance(decision, esc.Resolved):
                if before.incident_id is not None:
                    self._close_incident(host, before.incident_id, self.clock.time())
                    self._tell_fixed(host, before)
                self._reprobe(host)
            elif isinstance(decision, esc.Retry):
                self._later(host, decision.at, decision.event or event)
        return follow

    async def _answers_now(self, host: str, check: str) -> bool:
        """Re-probe ``check`` before the first destructive action decided on it (recorded as usual)."""
        spec = self._specs.get((host, check))
        return spec is not None and (await self.scheduler.run_now(spec.id)).ok

    def _tell_fixed(self, host: str, ladder: esc.HostState) -> None:
        """On-call hears (severity info, no escalation) of a host fixed automatically by a level-1
        power action, so people know a customer's server was reset."""
        if ladder.ladder is esc.Ladder.HOST and ladder.level == 1 and any(
                t.split(":")[0] in esc.POWER_STEPS for t in ladder.tried):
            self.notifier.inform(host, "auto_fixed", f"{host}: reset automatically at level 1 and verified "
                                                     f"(ping and SSH login); no action needed", ladder.incident_id)

    def _commit(self, host: str, state: esc.HostState, decisions: list, event: esc.Event, now: float) -> list[int]:
        """Persist the new state and journal the decisions in one durable transaction."""
        incident = state.incident_id or getattr(event, "incident_id", None) or self.state(host).incident_id
        ids: list[int] = []
        with self.store.transaction(durable=True):
            self.store.put_escalation_state(host, state_to_dict(state))
            for d in decisions:
                ids.append(self.store.append(_journal_entry(host, d, state, incident, now)))
        self._states[host] = state
        self.metrics.escalation_level.labels(host).set(state.level)
        for d in decisions:
            if isinstance(d, esc.Blocked):
                self.metrics.guard_blocks.labels(d.guard).inc()
                log.warning("%s: %s", host, d.why)
            elif isinstance(d, esc.Page):
                self.metrics.escalation_pages.labels(d.kind).inc()
                log.warning("%s: PAGE %s (level %d): %s", host, d.kind, d.level, d.summary)
                if not self.blast.hold(host, d.kind, d.summary):
                    self.notifier.page(host, d.kind, f"{host}: {d.summary}", incident, self._page_details(host, d),
                                       vendors=[d.detail["vendor"]] if "vendor" in d.detail else [])
            elif isinstance(d, esc.Act):
                log.warning("%s: level %d: %s (%s)", host, d.level, d.step, d.why)
                if d.step is esc.Step.REQUEST_APPROVAL:
                    self._ask_emergency_contact(host, d, incident)
            elif isinstance(d, esc.Resolved):
                log.info("%s: resolved: %s", host, d.why)
            elif isinstance(d, esc.StartSla):
                log.warning("%s: SLA timer %s started", host, d.name)
                self.notifier.start_sla(incident, host, d.name)
        return ids

    def _page_details(self, host: str, page: esc.Page) -> dict:
        """What the on-call engineer needs: what was tried, BMC findings, the customer's instructions
        and, with a backup contract, the last good backup to restore (:mod:`monitord.shared.lastbackup`)."""
        h = self.config.hosts[host]
        findings = [e.detail.get("findings") for e in self.store.journal(host=host, limit=100_000)
                    if e.event == "outcome" and e.decision == "bmc_read" and e.detail.get("findings")]
        backups = lastbackup.for_host(self.config.checks(), self.ctx.state_dir, host) if h.instructions.backup_contract else []
        zone = self.calendars.for_host(host).zone
        return {"level": page.level, "tried": page.detail.get("tried", []), "bmc": findings[-1] if findings else None,
                "causes": page.detail.get("causes", []),
                "customer": h.customer, "backup_contract": h.instructions.backup_contract,
                "restore": "restore the last backup" if h.instructions.backup_contract else None,
                "last_backup": ([b.describe(zone) for b in backups] or ["no backup check configured: last backup unknown"])
                if h.instructions.backup_contract else None,
                "config_changes": h.instructions.config_changes, "runbook": h.instructions.runbook}

    def _ask_emergency_contact(self, host: str, act: esc.Act, incident: int | None) -> None:
        """Page the customer's emergency contact for approval (off-hours contact-first rule)."""
        h = self.config.hosts[host]
        customer = self.config.customers.get(h.customer) if h.customer else None
        targets = customer.emergency_contact if customer and customer.emergency_contact else None
        summary = (f"{host}: approval needed outside business hours for {act.args.get('for')}: "
                   f"answer with `monitord approve {host}` or `monitord deny {host}`")
        self.notifier.page(host, "approval", summary, incident, {"action": act.args.get("for")}, targets=targets)
    def _journal_outcome(self, host: str, act: esc.Act, done: esc.Done, ref: int) -> None:
        outcome = "ok" if done.ok else "failed"
        self.metrics.actions.labels(str(act.step), outcome).inc()
        with self.store.transaction(durable=True):
            self.store.append(JournalEntry(
                ts=self.clock.time(), event="outcome", host=host, incident_id=self.state(host).incident_id,
                decision=str(act.step), reason=done.reason or None, outcome=outcome, ref=ref,
                detail=_jsonable(done.detail)))

    def _later(self, host: str, at: float, event: esc.Event) -> None:
        async def again() -> None:
            await self.clock.sleep_until(at)
            await self._drive(host, event)

        task = asyncio.create_task(again(), name=f"retry {host}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reprobe(self, host: str) -> None:
        """Run the host's checks now, so their states catch up with what the ladder verified."""
        for (h, _), spec in self._specs.items():
            if h == host:
                self.scheduler.run_soon(spec.id)

    # -- policy and guards --------------------------------------------------------------------

    def policy(self, host: str) -> esc.Policy:
        """The host's remediation policy, from the config."""
        h, r = self.config.hosts[host], self.config.remediation(host)
        return esc.Policy(
            power_drivers=h.power_drivers(),
            has_bmc=h.bmc is not None, has_ssh=h.ssh is not None,
            boot_timeout=r["boot_timeout"], max_resets=r["max_resets"], reset_window=r["reset_window"],
            grace=r["grace"], max_restarts=r["max_restarts"], restart_window=r["restart_window"],
            contact_first=frozenset(esc.Step(a) for a in r["contact_first"]), on_no_answer=r["on_no_answer"],
            dry_run=r["dry_run"],
            restartable=frozenset(name for name, check in h.checks.items() if check.restart is not None),
            name=host, verify_interval=max(r["verify_interval"], 5.0),
            engineer_on_site=self.config.paging.sla.engineer_on_site,
            steps=tuple(rung.key() for rung in r["ladder"]),
            processes=frozenset(name for name, check in h.checks.items()
                                if check.restart is not None and check.restart.start_command is not None),
        )

    def explain(self, host: str) -> dict:
        """Why the engine is or is not acting on ``host`` now: where its ladder stands, what the
        ladder would decide next for a check confirmed down (the ladder's own :func:`esc.step` on
        a copy), and every guard's verdict on the next destructive step (the ladder's own guard
        code). Nothing is probed, stored or journaled: parents and the blast radius are read as the
        scheduler and the blast guard last saw them."""
        now = self.clock.time()
        state, policy, guards = self.state(host), self.policy(host), self._cheap_guards(host, now)
        host_ladder = state.ladder is not esc.Ladder.SERVICE
        what = next((s for s in (state.pending, state.step) if s in esc.DESTRUCTIVE),
                    esc.Step.POWER_RESET if host_ladder else esc.Step.SERVICE_RESTART)
        verdicts = [(name, block.why if block else None) for name, block in esc.guard_verdicts(what, policy, guards)]
        if what in esc.POWER_STEPS:
            used, limit = len(esc.recent_power_actions(state, policy, now)), policy.max_resets
            verdicts.append(("limit", f"reset limit reached ({used}/{limit})" if used >= limit else None))
        else:
            used, limit = len(esc.recent_restarts(state, policy, now)), policy.max_restarts
            verdicts.append(("limit", f"restart limit reached ({used}/{limit})" if used >= limit else None))
        verdicts.append(("grace", f"grace period after the last action until {_iso(state.grace_until)}"
                         if now < state.grace_until else None))
        verdicts.append(("off_hours_approval", f"outside business hours: the emergency contact is asked before {what}"
                         if what in policy.contact_first and guards.off_hours else None))
        return {
            "host": host, "at": now,
            "ladder": {"phase": str(state.phase), "ladder": state.ladder and str(state.ladder), "level": state.level,
                       "step": state.step and str(state.step), "pending": state.pending and str(state.pending),
                       "incident": state.incident_id, "blocked": state.blocked, "tried": list(state.tried),
                       "grace_until": state.grace_until or None,
                       "recent_power_actions": len(esc.recent_power_actions(state, policy, now)),
                       "recent_restarts": len(esc.recent_restarts(state, policy, now))},
            "next": self._next(host, state, policy, guards, now),
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
        down = [(spec, check) for (h, _), spec in self._specs.items() if h == host
                and (check := self._check_state(host, spec.name)) is not None and check.level == 2
                and check.last_result is not None and actionable(check.last_result)]
        if not down:
            failing = [spec for (h, _), spec in self._specs.items() if h == host
                       and (check := self._check_state(host, spec.name)) is not None and check.level == 1]
            if failing:
                due = self.scheduler.due_times().get(failing[0].id)
                return {"what": f"{failing[0].name} fails but is not confirmed yet: it is retried", "at": due,
                        "decisions": []}
            return {"what": "nothing: no check of the host is confirmed down", "at": None, "decisions": []}
        spec, check = min(down, key=lambda sc: not self.is_host_down_check(sc[0]))
        event = esc.Confirmed(spec.name, self.is_host_down_check(spec), self.episode(host), check.last_result.summary)
        _, decisions = esc.step(state, event, policy, guards, now)
        described = [_describe(d) for d in decisions]
        retry = next((d.at for d in decisions if isinstance(d, esc.Retry)), None)
        return {"what": f"{spec.name} is confirmed down: " + ("; ".join(described) or "nothing new (the block stands)"),
                "at": retry if retry is not None else self.scheduler.due_times().get(spec.id), "decisions": described}

    def _cheap_guards(self, host: str, now: float) -> esc.Guards:
        return esc.Guards(
            maintenance=self.maintenance_for(host, now),
            parent_down=self._parent_down(host),
            quarantined=host in self.store.quarantined(),
            off_hours=not self.calendars.for_host(host).is_business_time(now),
            dry_run=self.dry_run,
            blast_radius=self.blast.active,
        )

    async def _full_guards(self, host: str, guards: esc.Guards) -> esc.Guards:
        """Guards that need probes, checked right before a destructive action."""
        parent = guards.parent_down or await self._parent_down_now(host)
        return dataclasses.replace(guards, parent_down=parent, blast_radius=await self.blast.evaluate())

    def maintenance_for(self, host: str, now: float) -> str | None:
        """The name of a maintenance window covering ``host`` now, if any."""
        targets = self.config.targets_of(host)
        for name, window in self.config.maintenance.items():
            if window.covers(now) and targets & window.targets():
                return name
        for window in self.store.maintenance():
            if window.starts <= now < window.ends and window.target in targets:
                return f"#{window.id} {window.reason}".strip()
        return None

    def _ancestors(self, host: str) -> list[str]:
        seen: list[str] = []
        stack = list(self.config.hosts[host].parents)
        while stack:
            parent = stack.pop()
            if parent not in seen and parent in self.config.hosts:
                seen.append(parent)
                stack.extend(self.config.hosts[parent].parents)
        return seen

    def _host_down_specs(self, host: str) -> list[CheckSpec]:
        return [s for (h, _), s in self._specs.items() if h == host and self.is_host_down_check(s)]

    def _parent_down(self, host: str) -> str | None:
        for parent in self._ancestors(host):
            for spec in self._host_down_specs(parent):
                try:
                    if self.scheduler.state_of(spec.id).level > 0:
                        return parent
                except KeyError:
                    pass
        return None

    async def _parent_down_now(self, host: str) -> str | None:
        """Probe the ancestors now: a parent may fail before its own checks confirm it."""
        for parent in self._ancestors(host):
            results = await asyncio.gather(*(self._probe(s) for s in self._host_down_specs(parent)))
            if any(not r.ok for r in results):
                return parent
        return None

    async def _probe(self, spec: CheckSpec) -> Result:
        return await run_probe(spec.kind, self.ctx, spec.call(), spec.params, self.clock.time())

    def _failing_hosts(self) -> dict[str, float]:
        """Hosts whose host-down checks fail now (soft or hard), with when the failure began."""
        failing: dict[str, float] = {}
        for (host, _), spec in self._specs.items():
            if self.is_host_down_check(spec):
                check = self._check_state(host, spec.name)
                if check is not None and check.status is not Status.OK:
                    failing[host] = min(failing.get(host, check.problem_since or 0.0), check.problem_since or 0.0)
        return failing

    async def _host_answers(self, host: str) -> bool:
        """Probe ``host``'s host-down checks now: True when they all pass."""
        specs = self._host_down_specs(host)
        return all(r.ok for r in await asyncio.gather(*(self._probe(s) for s in specs)))

    def _log_maintenance_changes(self) -> None:
        """Journal windows that started or ended since the last look (expiry is logged)."""
        now = self.clock.time()
        active = {f"config:{n}" for n, w in self.config.maintenance.items() if w.covers(now)}
        active |= {f"cli:{w.id}" for w in self.store.maintenance() if w.starts <= now < w.ends}
        for name in sorted(active - self._active_windows):
            log.info("maintenance window %s started", name)
        for name in sorted(self._active_windows - active):
            log.info("maintenance window %s ended", name)
            with self.store.transaction():
                self.store.append(JournalEntry(ts=now, event="maintenance", decision="ended", reason=name))
        self._active_windows = active

    # -- carrying out actions -----------------------------------------------------------------

    # -- what operators ask of the running daemon (the API) ------------------------------------

    async def quarantine(self, host: str, reason: str, by: str | None) -> tuple[bool, str]:
        """Quarantine ``host``: recorded at once (from then on nothing powers it on, and its ladder
        is held), then powered off as soon as no power command is under way: a compromised server
        is stopped at once, not after the ladder's boot wait or approval; return (powered off, summary)."""
        decided = quarantine.record(self.store, self.config, host, reason, by)
        async with self._power_locks[host]:
            return await quarantine.power_off(self.store, self.config, host, decided, self.drivers)

    async def release(self, host: str, by: str | None) -> bool:
        """Lift the quarantine of ``host`` under its lock (it is not powered on); False if it was not quarantined."""
        async with self._locks[host]:
            return quarantine.release(self.store, host, by)

    def answered(self, host: str) -> None:
        """An approval answer for ``host`` was recorded through the API: a ladder waiting for it reads it now."""
        self._answers[host].set()

    async def _execute(self, host: str, act: esc.Act) -> esc.Done:
        self.metrics.last_action.labels(host).set(self.clock.time())
        try:
            return await self._do(host, act)
        except ActionError as exc:
            return esc.Done(act.step, False, str(exc.reason), {"driver": act.args.get("driver"), "error": exc.summary,
                                                               "maybe_done": exc.maybe_done})
        except (asyncio.CancelledError, StoreFault):
            raise
        except Exception as exc:  # noqa: BLE001 - a driver bug must not kill the ladder
            log.exception("%s: %s failed unexpectedly", host, act.step)
            return esc.Done(act.step, False, "error", {"driver": act.args.get("driver"), "error": repr(exc)})

    async def _do(self, host: str, act: esc.Act) -> esc.Done:
        h, r = self.config.hosts[host], self.config.remediation(host)
        if act.step is esc.Step.BMC_READ:
            health = await self.drivers.bmc_health(h.bmc)
            return esc.Done(act.step, True, detail={"findings": health.summary()})
        if act.step in esc.POWER_STEPS:
            # A PDU outlet is always switched off, verified off, then on: its status may still read
            # "on" right after a reboot command, so a reboot cannot be verified (fence-agents' onoff).
            cycle = act.step is esc.Step.POWER_CYCLE or r["power_method"] == "onoff" or act.args["driver"] == "pdu"
            async with self._power_locks[host]:
                outcome = await power.change(self.drivers, self.store, h, host, act.args["driver"],
                                             PowerAction.CYCLE if cycle else PowerAction.RESET,
                                             power.timings(self.config, host))
            return esc.Done(act.step, True, detail={"driver": act.args["driver"], "steps": list(outcome.steps)})
        if act.step is esc.Step.WAIT_BOOT:
            return await self._wait_boot(host, act.args.get("timeout", r["boot_timeout"]))
        if act.step is esc.Step.FSCK:
            await self.drivers.ssh(h.address, h.ssh).force_fsck(r["fsck_command"])
            return esc.Done(act.step, True)
        if act.step is esc.Step.SERVICE_RESTART:
            return await self._restart(host, act.args["check"])
        if act.step is esc.Step.REQUEST_APPROVAL:
            return await self._approval(host, self.clock.time() + r["approval_timeout"])
        if act.step is esc.Step.VERIFY:
            return await self._verify(host)
        raise AssertionError(f"unknown step {act.step}")

    async def _wait_boot(self, host: str, timeout: float) -> esc.Done:
        """Poll ping and an SSH login until both work or ``timeout``; then read the boot log."""
        r = self.config.remediation(host)
        deadline = self.clock.time() + timeout
        while True:
            detail = await self._boot_check(host)
            if detail["ping"] and detail["login"]:
                return esc.Done(esc.Step.WAIT_BOOT, not detail["fs_errors"], detail=detail)
            if self.clock.time() >= deadline:
                return esc.Done(esc.Step.WAIT_BOOT, False, "timeout", detail)
            await self.clock.sleep_until(min(deadline, self.clock.time() + r["verify_interval"]))

    async def _boot_check(self, host: str) -> dict:
        """One look: does the host answer ping, does an SSH login work, what does the boot log say."""
        h = self.config.hosts[host]
        ping_specs = [s for s in self._host_down_specs(host) if s.kind.host_down] or self._host_down_specs(host)
        ping_ok = bool(ping_specs) and all(r_.ok for r_ in await asyncio.gather(*(self._probe(s) for s in ping_specs)))
        login_ok, login_error, fs_errors = False, "", []
        if ping_ok and h.ssh is not None:
            client = self.drivers.ssh(h.address, h.ssh)
            try:
                await client.login_check()
                login_ok = True
                fs_errors = await client.boot_errors()
            except ActionError as exc:
                login_error = exc.summary
        elif ping_ok:
            login_ok, login_error = True, "no SSH access configured: verified by ping only"
        return {"ping": ping_ok, "login": login_ok, "fs_errors": fs_errors, "note": login_error}

    async def _verify(self, host: str) -> esc.Done:
        """The ladder's verification, once: ping AND an SSH login, plus the service probe for a
        service ladder."""
        state = self.state(host)
        detail = await self._boot_check(host)
        ok = bool(detail["ping"] and detail["login"])
        summary = "ping ok, login ok" if ok else f"ping {'ok' if detail['ping'] else 'failed'}, login failed"
        if ok and state.ladder is not esc.Ladder.HOST and (host, state.check) in self._specs:
            result = await self.scheduler.run_now(self._specs[(host, state.check)].id)
            ok, summary = result.ok, f"{summary}, {state.check}: {result.summary}"
        return esc.Done(esc.Step.VERIFY, ok, "" if ok else "not verified", {**detail, "summary": summary})

    async def _restart(self, host: str, check: str) -> esc.Done:
        """Log in, restart the service, wait its grace, re-probe at once."""
        h = self.config.hosts[host]
        method = h.checks[check].restart
        client = self.drivers.ssh(h.address, h.ssh)
        try:
            await client.login_check()
        except ActionError as exc:
            return esc.Done(esc.Step.SERVICE_RESTART, False, str(exc.reason), {"login": False, "error": exc.summary})
        was_active = (await client.service_active(method.unit or "", status_command=method.status_command)
                      if method.unit or method.status_command else None)  # a bare process has no unit to ask
        await client.restart(method)
        await self.clock.sleep_until(self.clock.time() + method.grace)
        result = await self.scheduler.run_now(self._specs[(host, check)].id)
        return esc.Done(esc.Step.SERVICE_RESTART, result.ok, str(result.reason),
                        {"login": True, "was_active": was_active, "probe": result.summary})

    async def _approval(self, host: str, deadline: float) -> esc.Done:
        """Wait for the emergency contact's answer (``monitord approve|deny HOST``) until ``deadline``:
        at once when it comes through the API (:meth:`answered`), else at the next look at the store
        (the CLI writes it there when the daemon has no API token)."""
        since = self.clock.time()
        while self.clock.time() < deadline:
            self._answers[host].clear()
            answer = self.store.take_approval(host, since)
            if answer is not None:
                return esc.Done(esc.Step.REQUEST_APPROVAL, answer == "granted", detail={"answer": answer})
            poll = min(deadline, self.clock.time() + APPROVAL_POLL)
            await _first(self._answers[host].wait(), self.clock.sleep_until(poll))
        return esc.Done(esc.Step.REQUEST_APPROVAL, False, "timeout", {"answer": None})

    async def _resume(self, host: str) -> None:
        """Reconcile an action that was in flight when the daemon stopped: read, never redo."""
        async with self._locks[host]:
            state = self.state(host)
            step, now = state.step, self.clock.time()
            r = self.config.remediation(host)
            note = f"resumed after restart: {step} was decided at {state.acted_at:.0f}"
            if step in esc.POWER_STEPS:
                driver_name = self.policy(host).power_drivers[0] if not state.drivers_failed else next(
                    (d for d in self.policy(host).power_drivers if d not in state.drivers_failed), "")
                try:
                    state_now = await power.status(self.drivers, self.config.hosts[host], driver_name)
                    note += f"; power is {state_now}; not re-issuing it"
                except ActionError as exc:
                    note += f"; power state unreadable ({exc.summary}); not re-issuing it"
                done = esc.Done(step, True, detail={"driver": driver_name, "reconciled": True})
            elif step is esc.Step.WAIT_BOOT:
                done = await self._wait_boot(host, max(state.acted_at + r["boot_timeout"] - now, r["verify_interval"]))
            elif step is esc.Step.FSCK:
                note += "; treating it as done and verifying the boot"
                done = esc.Done(step, True, detail={"reconciled": True})
            elif step is esc.Step.SERVICE_RESTART:
                note += "; re-probing instead of restarting again"
                result = await self.scheduler.run_now(self._specs[(host, state.check)].id)
                done = esc.Done(step, result.ok, str(result.reason), {"login": True, "probe": result.summary})
            elif step is esc.Step.REQUEST_APPROVAL:
                done = await self._approval(host, max(state.acted_at + r["approval_timeout"], now + APPROVAL_POLL))
            else:
                done = await self._execute(host, esc.Act(step, state.level, "resumed after restart"))
            with self.store.transaction(durable=True):
                self.store.append(JournalEntry(ts=now, event="reconciled", host=host, incident_id=state.incident_id,
                                               decision=str(step), reason=note, outcome="ok" if done.ok else "failed",
                                               detail=_jsonable(done.detail)))
            log.warning("%s: %s", host, note)
            await self._advance_all(host, done)


async def _no() -> bool:
    return False


def actionable(result: Result) -> bool:
    """Whether a confirmed result may start a ladder: the thing is down (critical, and not a
    threshold verdict such as partial packet loss or a certificate about to expire, nor a
    refused login, e.g. a wrong database password: the service answered, and a restart would
    not fix our credentials)."""
    return result.status is Status.CRITICAL and result.reason not in (Reason.THRESHOLD, Reason.AUTH)


def _notice_kind(spec: CheckSpec, result: Result) -> str:
    """Which customer notice a confirmed problem of ``spec`` is: a capacity threshold or a failure."""
    return "threshold" if result.reason is Reason.THRESHOLD and spec.kind.threshold_notice else "failure"


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


def _journal_entry(host: str, d: esc.Decision, state: esc.HostState, incident: int | None, now: float) -> JournalEntry:
    """How each kind of decision reads in the journal."""
    base = dict(ts=now, host=host, check=state.check, incident_id=incident)
    if isinstance(d, esc.Act):
        return JournalEntry(event="decided", decision=str(d.step), reason=d.why,
                            detail={"level": d.level, **_jsonable(d.args)}, **base)
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


async def _first(*waits) -> None:
    """Wait until the first of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
