"""The actions: one executor per step of the ladder, and the pages the ladder decides.

An executor carries out one :class:`~monitord.escalation.ladder.Act` (already journaled by the
engine, under the host's lock) and returns its :class:`~monitord.escalation.ladder.Done`. Every
probe an executor runs (the boot check, the re-probe after a restart, the verification) goes
through :class:`~monitord.escalation.fleet.Fleet`, the scheduler's path.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, TypeVar

from monitord.config import Config
from monitord.escalation import ladder as esc
from monitord.escalation import power
from monitord.escalation.fleet import Fleet
from monitord.paging.business_calendar import Calendars
from monitord.paging.notify import Notifier
from monitord.paging.oncall import PageKind
from monitord.records.store import Store, StoreFault
from monitord.shared import lastbackup
from monitord.shared.clock import Clock
from monitord.shared.power import ActionError, PowerAction
from monitord.shared.probe import ProbeContext
from remediation.drivers import Drivers

log = logging.getLogger(__name__)

APPROVAL_POLL = 2.0

Executor = Callable[[str, esc.Act, esc.HostState], Awaitable[esc.Done]]
ArgsT = TypeVar("ArgsT", esc.PowerArgs, esc.BootArgs, esc.RestartArgs)


class Actions:
    """Carries out the ladder's steps for the hosts of one configuration."""

    def __init__(self, *, config: Config, store: Store, clock: Clock, fleet: Fleet, drivers: Drivers,
                 power_locks: dict[str, asyncio.Lock], answers: dict[str, asyncio.Event]):
        self.config, self.store, self.clock, self.fleet, self.drivers = config, store, clock, fleet, drivers
        self.power_locks, self.answers = power_locks, answers
        self.executors: dict[esc.Step, Executor] = {
            esc.Step.BMC_READ: self.bmc_read, esc.Step.POWER_RESET: self.power, esc.Step.POWER_CYCLE: self.power,
            esc.Step.WAIT_BOOT: self.wait_boot, esc.Step.FSCK: self.fsck,
            esc.Step.SERVICE_RESTART: self.restart, esc.Step.REQUEST_APPROVAL: self.approval,
            esc.Step.VERIFY: self.verify,
        }

    async def execute(self, host: str, act: esc.Act, state: esc.HostState) -> esc.Done:
        """Carry out ``act``; a driver's failure (or bug) is a failed outcome, never an exception."""
        try:
            return await self.executors[act.step](host, act, state)
        except ActionError as exc:
            return esc.Done(act.step, False, str(exc.reason), esc.Failed(_driver(act), exc.summary, exc.maybe_done))
        except (asyncio.CancelledError, StoreFault):
            raise
        except Exception as exc:  # noqa: BLE001 - a driver bug must not kill the ladder
            log.exception("%s: %s failed unexpectedly", host, act.step)
            return esc.Done(act.step, False, "error", esc.Failed(_driver(act), repr(exc)))

    async def bmc_read(self, host: str, act: esc.Act, state: esc.HostState) -> esc.Done:
        health = await self.drivers.bmc_health(self.config.hosts[host].bmc)
        return esc.Done(act.step, True, detail=esc.BmcFound(health.summary()))

    async def power(self, host: str, act: esc.Act, state: esc.HostState) -> esc.Done:
        """A reset or a cycle through the driver the ladder chose, under the host's power lock."""
        r, driver = self.config.remediation(host), _args(act, esc.PowerArgs).driver
        # A PDU outlet is always switched off, verified off, then on: its status may still read
        # "on" right after a reboot command, so a reboot cannot be verified (fence-agents' onoff).
        cycle = act.step is esc.Step.POWER_CYCLE or r.power_method == "onoff" or driver == "pdu"
        async with self.power_locks[host]:
            outcome = await power.change(self.drivers, self.store, self.config.hosts[host], host, driver,
                                         PowerAction.CYCLE if cycle else PowerAction.RESET,
                                         power.timings(self.config, host))
        return esc.Done(act.step, True, detail=esc.PowerDone(driver, tuple(outcome.steps)))

    async def wait_boot(self, host: str, act: esc.Act, state: esc.HostState) -> esc.Done:
        return await self.boot(host, _args(act, esc.BootArgs).timeout)

    async def boot(self, host: str, timeout: float) -> esc.Done:
        """Poll ping and an SSH login until both work or ``timeout``; then read the boot log."""
        r = self.config.remediation(host)
        deadline = self.clock.time() + timeout
        while True:
            found = await self.boot_check(host)
            if found.ping and found.login:
                return esc.Done(esc.Step.WAIT_BOOT, not found.fs_errors, detail=found)
            if self.clock.time() >= deadline:
                return esc.Done(esc.Step.WAIT_BOOT, False, "timeout", found)
            await self.clock.sleep_until(min(deadline, self.clock.time() + r.verify_interval))

    async def boot_check(self, host: str) -> esc.BootFound:
        """One look: does the host answer ping, does an SSH login work, what does the boot log say."""
        h = self.config.hosts[host]
        down_specs = self.fleet.host_down_specs(host)
        ping_specs = [s for s in down_specs if s.kind.host_down] or down_specs
        ping_ok = bool(ping_specs) and all(r.ok for r in await self.fleet.probe_all(ping_specs))
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
        return esc.BootFound(ping_ok, login_ok, tuple(fs_errors), login_error)

    async def fsck(self, host: str, act: esc.Act, state: esc.HostState) -> esc.Done:
        h = self.config.hosts[host]
        await self.drivers.ssh(h.address, h.ssh).force_fsck(self.config.remediation(host).fsck_command)
        return esc.Done(act.step, True)

    async def verify(self, host: str, act: esc.Act, state: esc.HostState) -> esc.Done:
        """The ladder's verification, once: ping AND an SSH login, plus the check's probe unless
        it is the host-down ladder."""
        found = await self.boot_check(host)
        ok = found.ping and found.login
        summary = "ping ok, login ok" if ok else f"ping {'ok' if found.ping else 'failed'}, login failed"
        spec = self.fleet.spec(host, state.check or "")
        if ok and state.ladder is not esc.Ladder.HOST and spec is not None:
            result = await self.fleet.probe(spec)
            ok, summary = result.ok, f"{summary}, {state.check}: {result.summary}"
        return esc.Done(esc.Step.VERIFY, ok, "" if ok else "not verified",
                        esc.Verified(found.ping, found.login, found.fs_errors, found.note, summary))

    async def restart(self, host: str, act: esc.Act, state: esc.HostState) -> esc.Done:
        """Log in, restart the service, wait its grace, re-probe at once."""
        h, check = self.config.hosts[host], _args(act, esc.RestartArgs).check
        method = h.checks[check].restart
        client = self.drivers.ssh(h.address, h.ssh)
        try:
            await client.login_check()
        except ActionError as exc:
            return esc.Done(esc.Step.SERVICE_RESTART, False, str(exc.reason), esc.RestartDone(False, error=exc.summary))
        was_active = (await client.service_active(method.unit or "", status_command=method.status_command)
                      if method.unit or method.status_command else None)  # a bare process has no unit to ask
        await client.restart(method)
        await self.clock.sleep_until(self.clock.time() + method.grace)
        result = await self.fleet.probe(self.fleet.specs[(host, check)])
        return esc.Done(esc.Step.SERVICE_RESTART, result.ok, str(result.reason),
                        esc.RestartDone(True, was_active, result.summary))

    async def approval(self, host: str, act: esc.Act, state: esc.HostState) -> esc.Done:
        return await self.answer(host, self.clock.time() + self.config.remediation(host).approval_timeout)

    async def answer(self, host: str, deadline: float) -> esc.Done:
        """Wait for the emergency contact's answer (``monitord approve|deny HOST``) until ``deadline``:
        at once when it comes through the API (``answers[host]`` is set), else at the next look at
        the store (the CLI writes it there when the daemon has no API token)."""
        since = self.clock.time()
        while self.clock.time() < deadline:
            self.answers[host].clear()
            answer = await self.store.control.take_approval(host, since)
            if answer is not None:
                return esc.Done(esc.Step.REQUEST_APPROVAL, answer == "granted", detail=esc.Answer(answer))
            poll = min(deadline, self.clock.time() + APPROVAL_POLL)
            await _first(self.answers[host].wait(), self.clock.sleep_until(poll))
        return esc.Done(esc.Step.REQUEST_APPROVAL, False, "timeout", esc.Answer(None))


class Pages:
    """The pages the ladder decides (dispatch, service failed, held, vendor...), the emergency
    contact's approval request and the note that a host was fixed automatically."""

    def __init__(self, *, config: Config, store: Store, notifier: Notifier, calendars: Calendars, ctx: ProbeContext):
        self.config, self.store, self.notifier, self.calendars = config, store, notifier, calendars
        self.ctx = ctx

    async def page(self, host: str, page: esc.Page, incident: int | None) -> None:
        await self.notifier.page(host, page.kind, f"{host}: {page.summary}", incident, await self.details(host, page),
                                 vendors=[page.detail["vendor"]] if "vendor" in page.detail else [])

    async def details(self, host: str, page: esc.Page) -> dict:
        """What the on-call engineer needs: what was tried, BMC findings, the customer's instructions
        and, with a backup contract, the last good backup to restore (:mod:`monitord.shared.lastbackup`)."""
        h = self.config.hosts[host]
        findings = [e.detail.get("findings") for e in await self.store.incidents.journal(host=host, limit=100_000)
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

    async def ask_emergency_contact(self, host: str, act: esc.Act, incident: int | None) -> None:
        """Page the customer's emergency contact for approval (off-hours contact-first rule)."""
        h = self.config.hosts[host]
        customer = self.config.customers.get(h.customer) if h.customer else None
        targets = customer.emergency_contact if customer and customer.emergency_contact else None
        action = str(act.args.action) if isinstance(act.args, esc.ApprovalArgs) else None
        summary = (f"{host}: approval needed outside business hours for {action}: "
                   f"answer with `monitord approve {host}` or `monitord deny {host}`")
        await self.notifier.page(host, PageKind.APPROVAL, summary, incident, {"action": action}, targets=targets)

    async def tell_fixed(self, host: str, ladder: esc.HostState) -> None:
        """On-call hears (severity info, no escalation) of a host fixed automatically by a level-1
        power action, so people know a customer's server was reset."""
        if ladder.ladder is esc.Ladder.HOST and ladder.level == 1 and any(
                t.split(":")[0] in esc.POWER_STEPS for t in ladder.tried):
            await self.notifier.inform(host, PageKind.AUTO_FIXED, f"{host}: reset automatically at level 1 and verified "
                                                     f"(ping and SSH login); no action needed", ladder.incident_id)



def _args(act: esc.Act, kind: type[ArgsT]) -> ArgsT:
    """``act``'s arguments, which its step's executor needs to be ``kind`` (anything else is a bug)."""
    if not isinstance(act.args, kind):
        raise TypeError(f"{act.step} needs {kind.__name__}, not {act.args!r}")
    return act.args


def _driver(act: esc.Act) -> str | None:
    """The power driver ``act`` goes through, if it is a power step."""
    return act.args.driver if isinstance(act.args, esc.PowerArgs) else None


async def _first(*waits: Awaitable[object]) -> None:
    """Wait until the first of ``waits`` is done; cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
