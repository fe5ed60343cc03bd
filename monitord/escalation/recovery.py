"""Recovery: an action that was in flight when the daemon stopped (or whose outcome could not be
journaled while the store was failing) is reconciled by reading state — the power status, a
re-probe, the boot, the emergency contact's answer — and never issued again.
"""

from __future__ import annotations

from monitord.config import Config
from monitord.escalation import ladder as esc
from monitord.escalation import power
from monitord.escalation.actions import APPROVAL_POLL, Actions
from monitord.shared.power import ActionError

IN_FLIGHT = (esc.Phase.ACTING, esc.Phase.AWAITING_APPROVAL)


def in_flight(state: esc.HostState) -> bool:
    """Whether ``state`` has an action (or an approval request) whose outcome is not recorded."""
    return state.phase in IN_FLIGHT


def catch_up(state: esc.HostState, check_ok: bool) -> str | esc.Event | None:
    """What a host held while the store failed needs now that it is writable: ``"resume"`` (an
    action's outcome was lost: reconcile it), a :class:`~monitord.escalation.ladder.Recovered` for
    its ladder (its check recovered meanwhile: verify), or None (still failing hosts are taken up
    by the periodic re-evaluation)."""
    if in_flight(state):
        return "resume"
    if state.ladder is not None and state.check is not None and check_ok:
        return esc.Recovered(state.check, state.ladder is esc.Ladder.HOST)
    return None


class Recovery:
    """Reconciles in-flight actions through the executors' read-only halves."""

    def __init__(self, *, config: Config, actions: Actions):
        self.config, self.actions = config, actions

    async def reconcile(self, host: str, state: esc.HostState, policy: esc.Policy, now: float) -> tuple[esc.Done, str]:
        """The outcome of ``state``'s step, found out without doing it again, and a note saying how."""
        step, r = state.step, self.config.remediation(host)
        note = f"resumed after restart: {step} was decided at {state.acted_at:.0f}"
        if step in esc.POWER_STEPS:
            driver = next((d for d in policy.power_drivers if d not in state.drivers_failed), "")
            try:
                note += f"; power is {await power.status(self.actions.drivers, self.config.hosts[host], driver)}"
                note += "; not re-issuing it"
            except ActionError as exc:
                note += f"; power state unreadable ({exc.summary}); not re-issuing it"
            return esc.Done(step, True, detail=esc.PowerDone(driver, reconciled=True)), note
        if step is esc.Step.WAIT_BOOT:
            return await self.actions.boot(host, max(state.acted_at + r.boot_timeout - now, r.verify_interval)), note
        if step is esc.Step.FSCK:
            return esc.Done(step, True, detail=esc.Reconciled()), note + "; treating it as done and verifying the boot"
        if step is esc.Step.SERVICE_RESTART:
            result = await self.actions.fleet.probe(self.actions.fleet.specs[(host, state.check or "")])
            return (esc.Done(step, result.ok, str(result.reason), esc.RestartDone(True, probe=result.summary)),
                    note + "; re-probing instead of restarting again")
        if step is esc.Step.REQUEST_APPROVAL:
            return await self.actions.answer(host, max(state.acted_at + r.approval_timeout, now + APPROVAL_POLL)), note
        # BMC read, verification: reading again is harmless
        return await self.actions.execute(host, esc.Act(step, state.level, "resumed after restart"), state), note
